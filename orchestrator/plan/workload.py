"""How much there is to move, per resource, before a byte is read: the plan's input.

Read-only: the inventory's facts (``orchestrator.inventory``) give objects
and bytes per bucket, tables, zones, secrets; EBS images are sized by the
blocks their snapshot holds (ListSnapshotBlocks, or the snapshot's
``FullSnapshotSizeInBytes`` where AWS reports it), never by the volume's
provisioned size: a 16 GiB volume whose snapshot holds 300 MiB moves 300
MiB. What the source cannot say (an RDS dump's size, a generated document's)
comes from the journal, where an earlier run or drill verified the same item,
and is otherwise stated as unknown: the plan counts its setup and requests,
and says so.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from orchestrator.inventory import Fact
from orchestrator.plan.cost import Work
from orchestrator.plan.priorities import Prioritizer

log = logging.getLogger(__name__)

#: Pages of ListSnapshotBlocks read to size one snapshot (10,000 blocks a page:
#: 5 TiB of 512 KiB blocks). Past that the rest of the volume counts as full.
EBS_SIZING_PAGES = 100
#: Items each exporter writes per resource (see orchestrator/export/exporters).
ITEMS_PER_RESOURCE = {"rds": 3, "dynamodb": 2, "route53": 2}
#: A stored DynamoDB item, gzipped JSON lines, when the table reports no size.
DYNAMODB_ITEM_BYTES = 200
#: One record set of a zone, rendered as a zone file and as JSON.
ROUTE53_RECORD_BYTES = 250


@dataclass(frozen=True)
class WorkUnit:
    """One resource's share of the export: what the plan schedules and descopes."""

    tier: str
    tier_rank: int
    kind: str
    #: The resource: a bucket, a volume, a database, a table, a zone, a region.
    name: str
    items: int
    bytes: int
    requests: int
    setups: int = 0
    #: False when the bytes are a guess the source could not back (say why in ``note``).
    size_known: bool = True
    note: str = ""

    @property
    def work(self) -> Work:
        return Work(self.kind, self.bytes, self.requests, self.setups)


def _tier(prioritizer: Prioritizer, source: Mapping[str, Any]) -> tuple[str, int]:
    return prioritizer(source), prioritizer.rank(source)


def units_from_facts(
    facts: Iterable[Fact],
    prioritizer: Prioritizer,
    *,
    kinds: Iterable[str],
    part_size: int,
    known_sizes: Mapping[str, int] | None = None,
    ebs_data_bytes: Any = None,
) -> list[WorkUnit]:
    """The export's work per resource, from inventory facts.

    ``known_sizes`` maps destination keys (``rds/<region>/<id>/dump.tar``)
    to sizes an earlier run verified. ``ebs_data_bytes(region, snapshot_id)``
    returns (bytes, blocks) a snapshot holds, or None when it cannot say.
    """
    wanted = set(kinds)
    known = dict(known_sizes or {})
    facts = list(facts)
    units: list[WorkUnit] = []
    snapshots = [f for f in facts if f.kind == "ebs-snapshot"]
    secrets_by_region: dict[str, int] = {}
    instances_by_region: dict[str, int] = {}
    for fact in facts:
        a = fact.attributes
        if fact.kind == "s3" and "s3" in wanted and not a.get("outside_configured_regions"):
            versioned = a.get("versioning") in ("Enabled", "Suspended")
            items = int(
                a.get("versions", a.get("objects", 0)) if versioned else a.get("objects", 0)
            )
            size = int(
                a.get("version_bytes", a.get("bytes", 0)) if versioned else a.get("bytes", 0)
            )
            tier, rank = _tier(prioritizer, {"kind": "s3", "bucket": fact.id})
            units.append(
                WorkUnit(
                    tier,
                    rank,
                    "s3",
                    fact.id,
                    items,
                    size,
                    # One GET per object, and one more per part of a large one.
                    requests=items + size // max(1, part_size),
                )
            )
        elif fact.kind == "ebs-volume" and "ebs" in wanted:
            units.append(_ebs_unit(fact, snapshots, prioritizer, ebs_data_bytes))
        elif fact.kind == "rds" and "rds" in wanted:
            prefix = f"rds/{fact.region}/{fact.id}/"
            sized = {k: v for k, v in known.items() if k.startswith(prefix)}
            tier, rank = _tier(prioritizer, {"kind": "rds", "name": fact.id, "region": fact.region})
            units.append(
                WorkUnit(
                    tier,
                    rank,
                    "rds",
                    fact.id,
                    ITEMS_PER_RESOURCE["rds"],
                    sum(sized.values()),
                    requests=ITEMS_PER_RESOURCE["rds"],
                    setups=1,
                    size_known=bool(sized),
                    note=""
                    if sized
                    else "dump size unknown until it runs (RDS reports allocated storage only); "
                    "counted as setup time",
                )
            )
        elif fact.kind == "dynamodb" and "dynamodb" in wanted:
            key = f"dynamodb/{fact.region}/{fact.id}.jsonl.gz"
            item_count = int(a.get("items") or 0)
            reported = int(a.get("bytes") or 0)
            size = known.get(key) or reported or item_count * DYNAMODB_ITEM_BYTES
            tier, rank = _tier(
                prioritizer, {"kind": "dynamodb", "table": fact.id, "region": fact.region}
            )
            units.append(
                WorkUnit(
                    tier,
                    rank,
                    "dynamodb",
                    fact.id,
                    ITEMS_PER_RESOURCE["dynamodb"],
                    size,
                    # Scan pages of up to 1 MB.
                    requests=2 + max(reported, size) // 1_000_000,
                    setups=1,
                    size_known=key in known or reported > 0,
                    note="" if key in known or reported else "size estimated from the item count",
                )
            )
        elif fact.kind == "route53" and "route53" in wanted:
            records = int(a.get("record_sets") or a.get("items") or 0)
            name = str(a.get("name") or fact.id)
            tier, rank = _tier(prioritizer, {"kind": "route53", "zone": name})
            units.append(
                WorkUnit(
                    tier,
                    rank,
                    "route53",
                    name,
                    ITEMS_PER_RESOURCE["route53"],
                    records * ROUTE53_RECORD_BYTES,
                    requests=2 + records // 300,
                )
            )
        elif fact.kind in ("secret", "ssm-parameter"):
            secrets_by_region[fact.region] = secrets_by_region.get(fact.region, 0) + 1
        elif fact.kind == "ec2":
            instances_by_region[fact.region] = instances_by_region.get(fact.region, 0) + 1
    if "secrets" in wanted:
        for region, count in sorted(secrets_by_region.items()):
            tier, rank = _tier(prioritizer, {"kind": "secrets", "region": region})
            units.append(
                WorkUnit(tier, rank, "secrets", region, 1, count * 1024, requests=2 * count)
            )
    if "ec2" in wanted:
        for region, count in sorted(instances_by_region.items()):
            tier, rank = _tier(prioritizer, {"kind": "ec2", "region": region})
            units.append(WorkUnit(tier, rank, "ec2", region, 1, count * 4096, requests=10 + count))
    return units


def _ebs_unit(
    volume: Fact, snapshots: list[Fact], prioritizer: Prioritizer, ebs_data_bytes: Any
) -> WorkUnit:
    a = volume.attributes
    tier, rank = _tier(
        prioritizer, {"kind": "ebs", "region": volume.region, "volume_id": volume.id}
    )
    mine = [
        s
        for s in snapshots
        if s.region == volume.region
        and volume.id in (s.attributes.get("source_volume_id"), s.attributes.get("volume_id"))
        and s.attributes.get("state") in ("completed", "pending")
    ]
    mine.sort(
        key=lambda s: (
            s.attributes.get("state") == "completed",
            s.attributes.get("start_time") or "",
        )
    )
    provisioned = int(a.get("provisioned_bytes") or int(a.get("size_gib") or 0) * 1024**3)
    if not mine:
        return WorkUnit(
            tier,
            rank,
            "ebs",
            volume.id,
            1,
            provisioned,
            requests=provisioned // (512 * 1024),
            setups=1,
            size_known=False,
            note="no snapshot yet: one is taken first, and the image counted as full",
        )
    snapshot = mine[-1]
    sized = ebs_data_bytes(volume.region, snapshot.id) if ebs_data_bytes else None
    snapshot_bytes = int(snapshot.attributes.get("provisioned_bytes") or provisioned)
    if sized is None:
        return WorkUnit(
            tier,
            rank,
            "ebs",
            volume.id,
            1,
            snapshot_bytes,
            requests=snapshot_bytes // (512 * 1024),
            setups=1,
            size_known=False,
            note=f"blocks of {snapshot.id} not listed; counted as full",
        )
    data_bytes, blocks = sized
    return WorkUnit(
        tier,
        rank,
        "ebs",
        volume.id,
        1,
        data_bytes,
        requests=blocks + 1,
        setups=1,
        note=f"{blocks} blocks of data in {snapshot.id} "
        f"(of a {snapshot_bytes // 1024**3} GiB volume)",
    )


def snapshot_data_bytes(
    account: Any, region: str, snapshot_id: str, *, max_pages: int = EBS_SIZING_PAGES
) -> tuple[int, int] | None:
    """(bytes, blocks) of data an EBS snapshot holds, or None if it cannot be read.

    Counts ListSnapshotBlocks pages (read-only); a snapshot with more blocks
    than ``max_pages`` pages list counts the rest of its volume as full.
    """
    try:
        ec2 = account.client("ec2", region)
        described = ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"][0]
        full = described.get("FullSnapshotSizeInBytes")
        client = account.client("ebs", region)
        blocks = 0
        block_size = 0
        volume_bytes = int(described.get("VolumeSize") or 0) * 1024**3
        token = None
        for _ in range(max_pages):
            params: dict[str, Any] = {"SnapshotId": snapshot_id, "MaxResults": 10000}
            if token:
                params["NextToken"] = token
            page = client.list_snapshot_blocks(**params)
            block_size = int(page.get("BlockSize") or block_size or 512 * 1024)
            blocks += len(page.get("Blocks", []))
            token = page.get("NextToken")
            if not token:
                break
            if full:
                return int(full), int(full) // block_size
        else:
            # Too many to count: the rest of the volume counts as full.
            return max(blocks * block_size, volume_bytes), max(blocks, volume_bytes // block_size)
        return blocks * block_size, blocks
    except Exception as exc:  # sizing is advice: the plan says it could not
        log.info("could not size EBS snapshot %s in %s: %s", snapshot_id, region, exc)
        return None


@dataclass(frozen=True)
class TierKind:
    """The units of one tier and kind, added up: a row of the plan."""

    tier: str
    tier_rank: int
    kind: str
    items: int
    bytes: int
    requests: int
    setups: int
    size_known: bool
    notes: tuple[str, ...]

    @property
    def work(self) -> Work:
        return Work(self.kind, self.bytes, self.requests, self.setups)


def by_tier_and_kind(units: Iterable[WorkUnit], kind_order: list[str]) -> list[TierKind]:
    """Units grouped per (tier, kind), most important tier first, kinds in ``kind_order``."""
    groups: dict[tuple[int, str, str], list[WorkUnit]] = {}
    for unit in units:
        groups.setdefault((unit.tier_rank, unit.tier, unit.kind), []).append(unit)

    def order(key: tuple[int, str, str]) -> tuple[int, int, str]:
        rank, _tier, kind = key
        return (rank, kind_order.index(kind) if kind in kind_order else len(kind_order), kind)

    rows = []
    for key in sorted(groups, key=order):
        members = groups[key]
        rows.append(
            TierKind(
                tier=key[1],
                tier_rank=key[0],
                kind=key[2],
                items=sum(u.items for u in members),
                bytes=sum(u.bytes for u in members),
                requests=sum(u.requests for u in members),
                setups=sum(u.setups for u in members),
                size_known=all(u.size_known for u in members),
                notes=tuple(f"{u.name}: {u.note}" for u in members if u.note),
            )
        )
    return rows
