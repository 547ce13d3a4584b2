"""EC2 instances and ELBv2 load balancers -> a portable YAML descriptor per region.

``ec2/<region>/descriptor.yaml`` (:data:`DESCRIPTOR_FORMAT`) is what
playbooks read to rebuild the service elsewhere: per instance its size (vCPU,
RAM, disks), image, network, security groups with their open ports, tags and
start-up script (user data); per load balancer its listeners, target groups
and targets; and a ``service`` summary (total vCPU, RAM and disk, the union
of open ports) so a playbook can size one host for the whole service.

User data is included decoded, because it is the start-up script a new host
needs. In the wild it sometimes holds credentials: the descriptor is written
in clear to every destination, so treat it as sensitive, and move such
values into Secrets Manager/SSM (which are exported encrypted).

The document is built in ``list_items`` (a region's EC2 description is
small) and kept for ``open``; its idempotency key is the sha256 of the YAML,
so an unchanged region is skipped on a later run.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime
from typing import Any, ClassVar

import botocore.exceptions
import yaml

from orchestrator.errors import FatalError
from orchestrator.export.exporters.base import (
    BytesStream,
    ExportContext,
    Exporter,
    ExportItem,
    SourceStream,
    TierOf,
)
from providers.aws import AwsAccount, call_aws

#: Format marker of the descriptor; bump when its shape changes.
DESCRIPTOR_FORMAT = "exitplan.ec2.descriptor/1"
DESCRIPTOR_NAME = "descriptor.yaml"

_CHUNK = 64 * 1024
#: Instances in these states are gone or going: nothing to rebuild.
_GONE_STATES = frozenset({"terminated", "shutting-down"})


class _DescriptorDumper(yaml.SafeDumper):
    """SafeDumper that writes multi-line strings (scripts) as ``|`` blocks, for people,
    and repeats shared values instead of writing ``&id001`` anchors a reader must chase."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str_representer(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_DescriptorDumper.add_representer(str, _str_representer)


def render_descriptor(document: Mapping[str, Any]) -> bytes:
    """The YAML bytes of a descriptor: same document, same bytes; ``yaml.safe_load`` reads it."""
    text = yaml.dump(
        dict(document),
        Dumper=_DescriptorDumper,
        sort_keys=False,  # keys are inserted in a fixed, readable order
        default_flow_style=False,
        allow_unicode=True,
        width=100,
    )
    return text.encode("utf-8")


def _iso(value: Any) -> str | None:
    if isinstance(value, datetime):
        return value.isoformat()
    return None if value is None else str(value)


def _tags(raw: Iterable[Mapping[str, str]] | None) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in sorted(raw or [], key=lambda t: t["Key"])}


def port_label(protocol: str, from_port: int | None, to_port: int | None) -> str:
    """``22/tcp``, ``1000-2000/udp``, ``all/all``: one spelling for open ports."""
    proto = "all" if protocol in ("-1", "all") else protocol.lower()
    if proto == "all" or from_port is None or from_port == -1:
        return f"all/{proto}"
    if to_port is None or to_port == from_port:
        return f"{from_port}/{proto}"
    return f"{from_port}-{to_port}/{proto}"


def _port_sort_key(label: str) -> tuple[int, int, str]:
    ports, _, proto = label.partition("/")
    if ports == "all":
        return (-1, -1, proto)
    low, _, high = ports.partition("-")
    return (int(low), int(high or low), proto)


def _ingress_rules(
    group: Mapping[str, Any], group_names: Mapping[str, str]
) -> list[dict[str, Any]]:
    rules = []
    for permission in group.get("IpPermissions", []):
        sources: list[str] = []
        sources += [r["CidrIp"] for r in permission.get("IpRanges", [])]
        sources += [r["CidrIpv6"] for r in permission.get("Ipv6Ranges", [])]
        sources += [f"prefix-list:{r['PrefixListId']}" for r in permission.get("PrefixListIds", [])]
        for pair in permission.get("UserIdGroupPairs", []):
            gid = pair.get("GroupId", "")
            name = group_names.get(gid) or pair.get("GroupName")
            sources.append(f"sg:{gid} ({name})" if name else f"sg:{gid}")
        protocol = str(permission.get("IpProtocol", "-1"))
        from_port = permission.get("FromPort")
        to_port = permission.get("ToPort")
        rules.append(
            {
                "ports": port_label(protocol, from_port, to_port),
                "protocol": "all" if protocol == "-1" else protocol,
                "from_port": from_port,
                "to_port": to_port,
                "sources": sorted(sources),
            }
        )
    return sorted(rules, key=lambda r: (_port_sort_key(r["ports"]), r["sources"]))


def _decode_user_data(encoded: str | None) -> dict[str, Any]:
    """User data as text when it is UTF-8 text, else as base64 (gzip, binary)."""
    if not encoded:
        return {"user_data": None}
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        return {"user_data": None, "user_data_base64": encoded}
    try:
        return {"user_data": raw.decode("utf-8")}
    except UnicodeDecodeError:
        return {"user_data": None, "user_data_base64": encoded}


class Ec2Exporter(Exporter):
    """``ec2/<region>/descriptor.yaml`` for every region with instances or load balancers.

    Read-only (describe calls only). Regions with neither get no item.
    """

    kind: ClassVar[str] = "ec2"

    def __init__(
        self, account: AwsAccount, *, tier_of: TierOf, context: ExportContext | None = None
    ) -> None:
        super().__init__(account, tier_of=tier_of, context=context)
        self._lock = threading.Lock()
        #: region -> (sha256 of the YAML, the YAML).
        self._rendered: dict[str, tuple[str, bytes]] = {}

    def _aws(self, what: str, fn: Callable[[], Any]) -> Any:
        return call_aws(what, fn)

    def _paginate(self, client: Any, operation: str, key: str, **kwargs: Any) -> list[Any]:
        pages = client.get_paginator(operation).paginate(**kwargs)
        return list(self._aws(f"{operation}", lambda: [x for p in pages for x in p.get(key, [])]))

    # -- describing -----------------------------------------------------------

    def describe_region(self, region: str) -> dict[str, Any]:
        """The descriptor document of ``region`` (plain dicts, lists and scalars)."""
        ec2 = self.account.client("ec2", region)
        elb = self.account.client("elbv2", region)
        instances = [
            instance
            for reservation in self._paginate(ec2, "describe_instances", "Reservations")
            for instance in reservation.get("Instances", [])
            if instance.get("State", {}).get("Name") not in _GONE_STATES
        ]
        groups = self._paginate(ec2, "describe_security_groups", "SecurityGroups")
        group_names = {g["GroupId"]: g.get("GroupName", "") for g in groups}
        rules_by_group = {g["GroupId"]: _ingress_rules(g, group_names) for g in groups}
        types = self._instance_types(ec2, {i["InstanceType"] for i in instances})
        images = self._images(ec2, {i["ImageId"] for i in instances if i.get("ImageId")})
        volumes = self._volumes(ec2, instances)

        described = [
            self._describe_instance(ec2, i, types, images, volumes, rules_by_group, group_names)
            for i in instances
        ]
        described.sort(key=lambda d: (d["name"] or "", d["id"]))
        names_by_id = {d["id"]: d["name"] for d in described}
        load_balancers = self._load_balancers(elb, names_by_id)

        # Only groups in use (by an instance or a load balancer) or that let one
        # of those in (the database's group): a default VPC's unused groups are noise.
        used = {g["id"] for d in described for g in d["security_groups"]}
        used |= {gid for lb in load_balancers for gid in lb["security_groups"]}
        referencing = {
            g["GroupId"]
            for g in groups
            for permission in g.get("IpPermissions", [])
            for pair in permission.get("UserIdGroupPairs", [])
            if pair.get("GroupId") in used
        }
        security_groups = [
            {
                "id": g["GroupId"],
                "name": g.get("GroupName"),
                "description": g.get("Description"),
                "vpc_id": g.get("VpcId"),
                "ingress": rules_by_group[g["GroupId"]],
            }
            for g in sorted(groups, key=lambda g: (g.get("GroupName", ""), g["GroupId"]))
            if g["GroupId"] in used | referencing
        ]

        open_ports = sorted(
            {r["ports"] for d in described for g in d["security_groups"] for r in g["ingress"]},
            key=_port_sort_key,
        )
        listener_ports = sorted({ls["port"] for lb in load_balancers for ls in lb["listeners"]})
        service = {
            "instances": len(described),
            "vcpus": sum(d["vcpus"] or 0 for d in described),
            "memory_mib": sum(d["memory_mib"] or 0 for d in described),
            "disk_gib": sum(d["disk_gib"] for d in described),
            "open_ports": open_ports,
            "listener_ports": listener_ports,
            "start_up_scripts": sum(1 for d in described if d["user_data"]),
        }
        return {
            "format": DESCRIPTOR_FORMAT,
            "region": region,
            "service": service,
            "instances": described,
            "load_balancers": load_balancers,
            "security_groups": security_groups,
        }

    def _instance_types(self, ec2: Any, names: set[str]) -> dict[str, Mapping[str, Any]]:
        if not names:
            return {}
        found = self._paginate(
            ec2, "describe_instance_types", "InstanceTypes", InstanceTypes=sorted(names)
        )
        return {t["InstanceType"]: t for t in found}

    def _images(self, ec2: Any, image_ids: set[str]) -> dict[str, Mapping[str, Any]]:
        images: dict[str, Mapping[str, Any]] = {}
        for image_id in sorted(image_ids):
            # One at a time: a deregistered AMI fails the whole call, and the
            # instance still runs (and must still be described) without it.
            try:
                found = self._aws(
                    f"describe AMI {image_id}",
                    functools.partial(ec2.describe_images, ImageIds=[image_id]),
                )["Images"]
            except botocore.exceptions.ClientError:
                found = []
            for image in found:
                images[image["ImageId"]] = image
        return images

    def _volumes(
        self, ec2: Any, instances: list[Mapping[str, Any]]
    ) -> dict[str, Mapping[str, Any]]:
        wanted = {
            m["Ebs"]["VolumeId"]
            for i in instances
            for m in i.get("BlockDeviceMappings", [])
            if "Ebs" in m
        }
        volumes = self._paginate(ec2, "describe_volumes", "Volumes")
        # Attachments on the volume side too: a volume attached after launch may
        # be missing from an instance's BlockDeviceMappings on some endpoints.
        return {
            v["VolumeId"]: v
            for v in volumes
            if v["VolumeId"] in wanted or any(a.get("InstanceId") for a in v.get("Attachments", []))
        }

    def _describe_instance(
        self,
        ec2: Any,
        instance: Mapping[str, Any],
        types: Mapping[str, Mapping[str, Any]],
        images: Mapping[str, Mapping[str, Any]],
        volumes: Mapping[str, Mapping[str, Any]],
        rules_by_group: Mapping[str, list[dict[str, Any]]],
        group_names: Mapping[str, str],
    ) -> dict[str, Any]:
        instance_id = instance["InstanceId"]
        tags = _tags(instance.get("Tags"))
        itype = types.get(instance["InstanceType"], {})
        image = images.get(instance.get("ImageId", ""), {})
        user_data = self._aws(
            f"read user data of {instance_id}",
            lambda: ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="userData"),
        )
        root_device = instance.get("RootDeviceName")
        disks = []
        for volume in volumes.values():
            for attachment in volume.get("Attachments", []):
                if attachment.get("InstanceId") != instance_id:
                    continue
                device = attachment.get("Device")
                disks.append(
                    {
                        "device": device,
                        "role": "root" if device == root_device else "data",
                        "volume_id": volume["VolumeId"],
                        "size_gib": int(volume.get("Size", 0)),
                        "type": volume.get("VolumeType"),
                        "iops": volume.get("Iops"),
                        "encrypted": bool(volume.get("Encrypted", False)),
                    }
                )
        disks.sort(key=lambda d: (d["role"] != "root", d["device"] or ""))
        memory_mib = itype.get("MemoryInfo", {}).get("SizeInMiB")
        security_groups = [
            {
                "id": sg["GroupId"],
                "name": sg.get("GroupName") or group_names.get(sg["GroupId"]),
                "ingress": rules_by_group.get(sg["GroupId"], []),
            }
            for sg in sorted(instance.get("SecurityGroups", []), key=lambda g: g["GroupId"])
        ]
        return {
            "name": tags.get("Name"),
            "id": instance_id,
            "state": instance.get("State", {}).get("Name"),
            "instance_type": instance["InstanceType"],
            "vcpus": itype.get("VCpuInfo", {}).get("DefaultVCpus"),
            "memory_mib": memory_mib,
            "architecture": instance.get("Architecture"),
            "platform": instance.get("PlatformDetails") or instance.get("Platform"),
            "image": {
                "id": instance.get("ImageId"),
                "name": image.get("Name"),
                "description": image.get("Description"),
                "platform": image.get("PlatformDetails") or image.get("Platform"),
                "architecture": image.get("Architecture"),
            },
            "disk_gib": sum(d["size_gib"] for d in disks),
            "disks": disks,
            "network": {
                "vpc_id": instance.get("VpcId"),
                "subnet_id": instance.get("SubnetId"),
                "availability_zone": instance.get("Placement", {}).get("AvailabilityZone"),
                "private_ip": instance.get("PrivateIpAddress"),
                "public_ip": instance.get("PublicIpAddress"),
                "private_dns": instance.get("PrivateDnsName") or None,
                "public_dns": instance.get("PublicDnsName") or None,
            },
            "security_groups": security_groups,
            "open_ports": sorted(
                {r["ports"] for g in security_groups for r in g["ingress"]}, key=_port_sort_key
            ),
            **_decode_user_data(user_data.get("UserData", {}).get("Value")),
            "key_name": instance.get("KeyName"),
            "iam_instance_profile": instance.get("IamInstanceProfile", {}).get("Arn"),
            "launch_time": _iso(instance.get("LaunchTime")),
            "tags": tags,
        }

    def _load_balancers(self, elb: Any, names_by_id: Mapping[str, str | None]) -> list[Any]:
        result = []
        for lb in self._paginate(elb, "describe_load_balancers", "LoadBalancers"):
            arn = lb["LoadBalancerArn"]
            groups = self._paginate(
                elb, "describe_target_groups", "TargetGroups", LoadBalancerArn=arn
            )
            tg_names = {g["TargetGroupArn"]: g.get("TargetGroupName") for g in groups}
            listeners = []
            for listener in self._paginate(
                elb, "describe_listeners", "Listeners", LoadBalancerArn=arn
            ):
                actions = listener.get("DefaultActions", [])
                listeners.append(
                    {
                        "port": listener.get("Port"),
                        "protocol": listener.get("Protocol"),
                        "ssl_policy": listener.get("SslPolicy"),
                        "certificate_arns": sorted(
                            c["CertificateArn"] for c in listener.get("Certificates", [])
                        ),
                        "default_actions": [
                            {
                                "type": a.get("Type"),
                                "target_group": tg_names.get(a.get("TargetGroupArn", ""))
                                or a.get("TargetGroupArn"),
                                "redirect": a.get("RedirectConfig"),
                            }
                            for a in actions
                        ],
                    }
                )
            target_groups = []
            for group in sorted(groups, key=lambda g: g.get("TargetGroupName", "")):
                health = self._aws(
                    f"describe targets of {group.get('TargetGroupName')}",
                    functools.partial(
                        elb.describe_target_health, TargetGroupArn=group["TargetGroupArn"]
                    ),
                )["TargetHealthDescriptions"]
                targets = sorted(
                    (
                        {
                            "id": h["Target"]["Id"],
                            "name": names_by_id.get(h["Target"]["Id"]),
                            "port": h["Target"].get("Port"),
                        }
                        for h in health
                    ),
                    key=lambda t: (t["name"] or "", t["id"]),
                )
                target_groups.append(
                    {
                        "name": group.get("TargetGroupName"),
                        "arn": group["TargetGroupArn"],
                        "protocol": group.get("Protocol"),
                        "port": group.get("Port"),
                        "target_type": group.get("TargetType"),
                        "health_check": {
                            "protocol": group.get("HealthCheckProtocol"),
                            "port": group.get("HealthCheckPort"),
                            "path": group.get("HealthCheckPath"),
                            "matcher": (group.get("Matcher") or {}).get("HttpCode"),
                            "interval_seconds": group.get("HealthCheckIntervalSeconds"),
                        },
                        "targets": targets,
                    }
                )
            result.append(
                {
                    "name": lb.get("LoadBalancerName"),
                    "arn": arn,
                    "type": lb.get("Type"),
                    "scheme": lb.get("Scheme"),
                    "dns_name": lb.get("DNSName"),
                    "vpc_id": lb.get("VpcId"),
                    "security_groups": sorted(lb.get("SecurityGroups", [])),
                    "listeners": sorted(listeners, key=lambda x: x["port"] or 0),
                    "target_groups": target_groups,
                }
            )
        return sorted(result, key=lambda lb: (lb["name"] or "", lb["arn"]))

    # -- the Exporter contract ------------------------------------------------

    def _render(self, region: str) -> tuple[str, bytes, dict[str, Any]]:
        document = self.describe_region(region)
        data = render_descriptor(document)
        digest = hashlib.sha256(data).hexdigest()
        with self._lock:
            self._rendered[region] = (digest, data)
        return digest, data, document

    def list_items(self) -> Iterator[ExportItem]:
        """One descriptor per region that has instances or load balancers."""
        for region in self.account.regions:
            digest, data, document = self._render(region)
            if not document["instances"] and not document["load_balancers"]:
                continue
            service = document["service"]
            source = {
                "kind": self.kind,
                "region": region,
                "instances": service["instances"],
                "load_balancers": len(document["load_balancers"]),
                "format": "yaml",
            }
            yield self.new_item(
                idem_key=f"ec2:{region}:{digest}",
                dest_key=f"ec2/{region}/{DESCRIPTOR_NAME}",
                size=len(data),
                source=source,
            )

    def open(self, item: ExportItem) -> SourceStream:
        """The descriptor as rendered at listing time (described again in a fresh process).

        Raises FatalError if the region changed since the item was listed.
        Retry-safe: yes.
        """
        region = str(item.source["region"])
        digest = item.idem_key.rsplit(":", 1)[-1]
        with self._lock:
            rendered = self._rendered.get(region)
        if rendered is None or rendered[0] != digest:
            fresh_digest, fresh_data, _ = self._render(region)
            rendered = (fresh_digest, fresh_data)
        if rendered[0] != digest:
            raise FatalError(
                f"EC2 resources in {region} changed after they were listed; list the items "
                "again to export the new descriptor"
            )
        return BytesStream(rendered[1], "the rendered descriptor")
