"""Config files as users write them: values, resolved paths, secrets, and each error's text."""

from __future__ import annotations

import dataclasses
import os
import textwrap
from datetime import timedelta
from pathlib import Path

import pytest

from orchestrator.config import (
    MAX_INPUT_BYTES,
    AwsSourceConfig,
    DestinationConfig,
    Secret,
    TransferConfig,
    default_sandbox_config,
    load_config,
    parse_bwlimit,
    parse_concurrency,
    parse_config_text,
    parse_size,
    read_bounded_text,
    write_sandbox_config,
)
from orchestrator.errors import ConfigError

MINIMAL = """\
source:
  aws:
    regions: [us-east-1]
destinations:
  - name: vault
    storage: {driver: local, path: ./evacuated}
"""

FULL = """\
source:
  aws: {profile: prod, regions: [us-west-2, eu-west-1], endpoint_url: "http://127.0.0.1:5000"}
deadline: 2021-01-10T23:59:00-08:00
safety_margin: 2h
workspace: state
priorities:
  - {tier: critical,    match: {kind: [rds, secrets, route53]}}
  - {tier: important,   match: {kind: s3, bucket: user-media}}
  - {tier: best-effort, match: {kind: "*"}}
destinations:
  - {name: vault, storage: {driver: local, path: ./evacuated}}
  - name: b2
    storage:
      driver: backblaze_b2
      host: s3.us-west-004.backblazeb2.com
      container: exit-copies
      key: "${B2_KEY_ID}"
      secret: "${B2_KEY}"
    encrypt: {recipients: ["age1examplerecipient"]}
candidates:
  - name: colo
    kind: ssh-pool
    hosts:
      - {address: 203.0.113.10, user: deploy, host_key: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIqI4910CfGV/VLbLTy6XXLKZwm/HZQSG/N0iAG0D29c", key_file: keys/id}
      - {address: 203.0.113.11, port: 2222, user: deploy, host_key: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIE5dw6ofRdfVqNUZsNMfszLjYqRtO43ol32D1uPybOU"}
  - {name: do, kind: libcloud, driver: digitalocean, key: "${DO_TOKEN}", size: s-4vcpu-8gb}
dns: {driver: powerdns, host: ns1.example.net, key: "${PDNS_KEY}"}
playbook: playbooks/web-service.yaml
transfer: {concurrency: 8, part_size: 8MiB, bwlimit: 50MiB}
"""

#: A valid public key (ed25519), as a pinned host key must be.
HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIqI4910CfGV/VLbLTy6XXLKZwm/HZQSG/N0iAG0D29c"
SECOND_HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIE5dw6ofRdfVqNUZsNMfszLjYqRtO43ol32D1uPybOU"
CANARY = "canary-7d1e0f-DO-NOT-LEAK"
ENV = {"B2_KEY_ID": "key-id", "B2_KEY": CANARY, "DO_TOKEN": "do-token", "PDNS_KEY": "pdns"}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "exitplan.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def error_for(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> str:
    """The message load_config gives for ``text``, with ``FILE`` standing for the path."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path, env=ENV if env is None else env)
    assert err.value.exit_code == 2
    return str(err.value).replace(str(path), "FILE")


def dedent(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


# -- what a valid file gives ---------------------------------------------------


def test_minimal_config_gets_defaults_and_paths_relative_to_the_file(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL), env={})
    assert config.source.aws == AwsSourceConfig(regions=("us-east-1",))
    assert config.destinations == (
        DestinationConfig("vault", "local", {"path": tmp_path / "evacuated"}),
    )
    assert config.deadline is None
    assert config.safety_margin == timedelta(minutes=30)
    assert config.workspace == tmp_path / ".exitplan"
    assert config.transfer == TransferConfig(concurrency=16, part_size=16 * 1024**2, bwlimit=None)
    assert (config.priorities, config.candidates, config.dns, config.playbook) == (
        (),
        (),
        None,
        None,
    )
    assert config.source_file == tmp_path / "exitplan.yaml"


def test_full_config(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, FULL), env=ENV)
    aws = config.source.aws
    assert (aws.profile, aws.regions, aws.endpoint_url, aws.sandbox) == (
        "prod",
        ("us-west-2", "eu-west-1"),
        "http://127.0.0.1:5000",
        False,
    )
    assert config.deadline == "2021-01-10T23:59:00-08:00"  # kept as written, not a YAML timestamp
    assert config.safety_margin == timedelta(hours=2)
    assert config.workspace == tmp_path / "state"
    assert [(p.tier, dict(p.match)) for p in config.priorities] == [
        ("critical", {"kind": ("rds", "secrets", "route53")}),
        ("important", {"kind": ("s3",), "bucket": ("user-media",)}),
        ("best-effort", {"kind": ("*",)}),
    ]
    vault, b2 = config.destinations
    assert dict(vault.options) == {"path": tmp_path / "evacuated"}
    assert (b2.name, b2.driver, b2.recipients) == ("b2", "backblaze_b2", ("age1examplerecipient",))
    assert {k: v for k, v in b2.options.items() if not isinstance(v, Secret)} == {
        "host": "s3.us-west-004.backblazeb2.com",
        "container": "exit-copies",
        "secure": True,
        "region": "us-east-1",
    }
    key, secret = b2.options["key"], b2.options["secret"]
    assert isinstance(key, Secret) and isinstance(secret, Secret)
    assert (key.reveal(), secret.reveal()) == ("key-id", CANARY)

    colo, do = config.candidates
    assert (colo.kind, do.kind) == ("ssh-pool", "libcloud")
    assert [dict(h) for h in colo.options["hosts"]] == [  # type: ignore[attr-defined]
        {
            "address": "203.0.113.10",
            "port": 22,
            "user": "deploy",
            "host_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIqI4910CfGV/VLbLTy6XXLKZwm/HZQSG/N0iAG0D29c",
            "key_file": tmp_path / "keys" / "id",
        },
        {
            "address": "203.0.113.11",
            "port": 2222,
            "user": "deploy",
            "host_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIE5dw6ofRdfVqNUZsNMfszLjYqRtO43ol32D1uPybOU",
        },
    ]
    assert do.options["driver"] == "digitalocean"
    assert config.dns is not None
    assert {k: v for k, v in config.dns.options.items() if k != "key"} == {
        "host": "ns1.example.net",
        "port": 8081,
        "server": "localhost",
        "secure": False,
    }
    assert config.playbook == tmp_path / "playbooks" / "web-service.yaml"
    assert config.transfer == TransferConfig(8, 8 * 1024**2, 50 * 1024**2)


def test_config_is_frozen(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL), env={})
    with pytest.raises(AttributeError):
        config.deadline = "+1h"  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.destinations[0].options["path"] = "/elsewhere"  # type: ignore[index]


def test_paths_resolve_against_the_file_not_the_working_directory(tmp_path: Path) -> None:
    nested = tmp_path / "ops" / "exit"
    nested.mkdir(parents=True)
    path = nested / "exitplan.yaml"
    path.write_text(MINIMAL.replace("./evacuated", "../vault") + "workspace: /var/exitplan\n")
    config = load_config(path, env={})
    assert config.destinations[0].options["path"] == tmp_path / "ops" / "vault"
    assert config.workspace == Path("/var/exitplan")


def test_env_references_anywhere_in_strings_and_typed_options(tmp_path: Path) -> None:
    text = MINIMAL.replace("./evacuated", '"/srv/${TEAM}/copies-${TEAM}"') + dedent(
        """
        dns: {driver: powerdns, host: "${PDNS_HOST}", port: "${PDNS_PORT}", key: "${K}",
              secure: "${TLS}", server: "cost $${NOT_A_VAR}"}
        """
    )
    env = {"TEAM": "web", "PDNS_HOST": "ns1", "PDNS_PORT": "9000", "K": "k", "TLS": "yes"}
    config = load_config(write(tmp_path, text), env=env)
    assert config.destinations[0].options["path"] == Path("/srv/web/copies-web")
    assert config.dns is not None
    options = config.dns.options
    assert (options["host"], options["port"], options["secure"]) == ("ns1", 9000, True)
    assert options["server"] == "cost ${NOT_A_VAR}"


def test_secret_made_of_several_references(tmp_path: Path) -> None:
    text = MINIMAL + dedent(
        """
        dns: {driver: powerdns, host: ns1, key: "${PART1}${PART2}"}
        """
    )
    config = load_config(write(tmp_path, text), env={"PART1": "ab", "PART2": "cd"})
    assert config.dns is not None
    key = config.dns.options["key"]
    assert isinstance(key, Secret) and key.reveal() == "abcd"


def test_merge_keys_and_anchors_work_as_in_yaml(tmp_path: Path) -> None:
    text = MINIMAL + dedent(
        """
        candidates:
          - name: a
            kind: ssh-pool
            hosts:
              - &base {address: 10.0.0.1, user: deploy, host_key: "KEY"}
              - {<<: *base, address: 10.0.0.2}
        """
    ).replace("KEY", HOST_KEY)
    config = load_config(write(tmp_path, text), env={})
    hosts = config.candidates[0].options["hosts"]
    assert [h["address"] for h in hosts] == ["10.0.0.1", "10.0.0.2"]  # type: ignore[attr-defined]
    assert hosts[1]["host_key"] == HOST_KEY  # type: ignore[index]


def test_parse_config_text_takes_its_own_names_and_env(tmp_path: Path) -> None:
    config = parse_config_text(MINIMAL, "inline", tmp_path / "base", env={})
    assert config.destinations[0].options["path"] == tmp_path / "base" / "evacuated"
    assert config.source_file is None
    with pytest.raises(ConfigError, match=r"^inline:1:1: destinations: required field"):
        parse_config_text("source: {aws: {regions: [us-east-1]}}\n", "inline", tmp_path, {})


# -- secrets never show ----------------------------------------------------------


def test_secrets_never_appear_in_reprs(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, FULL), env=ENV)
    secret = config.destinations[1].options["secret"]
    assert repr(secret) == str(secret) == f"{secret}" == "Secret('***')"
    for shown in (repr(config), str(config), repr(config.destinations)):
        assert CANARY not in shown
    assert "Secret('***')" in repr(config)


def test_secret_cannot_be_pickled() -> None:
    import pickle

    with pytest.raises(TypeError, match="a Secret cannot be pickled"):
        pickle.dumps(Secret(CANARY))


def test_secret_literal_is_refused_without_echoing_it(tmp_path: Path) -> None:
    text = FULL.replace('secret: "${B2_KEY}"', f"secret: {CANARY}")
    message = error_for(tmp_path, text)
    assert message == (
        "FILE:18:15: destinations[1].storage.secret: is a secret and cannot be written in the "
        "file; credentials come from the environment, write '${B2_SECRET}' and export B2_SECRET"
    )
    assert CANARY not in message


def test_secret_partly_literal_is_refused(tmp_path: Path) -> None:
    text = FULL.replace('key: "${DO_TOKEN}"', 'key: "dop_v1_${DO_TOKEN}"')
    assert error_for(tmp_path, text) == (
        "FILE:26:59: candidates[1].key: is a secret and cannot be written in the file; "
        "credentials come from the environment, write '${DO_KEY}' and export DO_KEY"
    )


def test_unset_environment_variable_is_named(tmp_path: Path) -> None:
    env = {k: v for k, v in ENV.items() if k != "B2_KEY_ID"}
    assert error_for(tmp_path, FULL, env) == (
        "FILE:17:12: destinations[1].storage.key: environment variable B2_KEY_ID is not set; "
        "export B2_KEY_ID before running exitplan"
    )


def test_bad_reference_syntax(tmp_path: Path) -> None:
    text = MINIMAL.replace("./evacuated", '"/srv/${1TEAM}"')
    assert error_for(tmp_path, text) == (
        "FILE:6:36: destinations[0].storage.path: '${1TEAM}' is not a valid environment variable "
        "reference; names are letters, digits and '_', not starting with a digit, e.g. ${B2_KEY}"
    )
    text = MINIMAL.replace("./evacuated", '"/srv/${TEAM"')
    assert error_for(tmp_path, text) == (
        "FILE:6:36: destinations[0].storage.path: '${' is not closed; write ${NAME}, "
        "or $${ for a literal '${'"
    )


# -- the file as a whole ------------------------------------------------------------


def test_yaml_syntax_error_points_at_the_problem(tmp_path: Path) -> None:
    text = dedent(
        """
        source:
          aws:
            regions: [us-east-1
        destinations: []
        """
    )
    assert error_for(tmp_path, text) == (
        "FILE:4:13: invalid YAML: expected ',' or ']', but got ':' (while parsing a flow "
        "sequence started at 3:14); fix the syntax here (indentation, quotes, brackets, "
        "and ': ' after each key)"
    )


def test_tab_indentation_is_a_syntax_error(tmp_path: Path) -> None:
    assert error_for(tmp_path, "source:\n\taws: {}\n") == (
        "FILE:2:1: invalid YAML: found character '\\t' that cannot start any token (while "
        "scanning for the next token); fix the syntax here (indentation, quotes, brackets, "
        "and ': ' after each key)"
    )


def test_python_tags_are_refused_by_the_safe_loader(tmp_path: Path) -> None:
    text = MINIMAL + "deadline: !!python/object/apply:os.system [touch pwned]\n"
    assert error_for(tmp_path, text) == (
        "FILE:7:11: invalid YAML: could not determine a constructor for the tag "
        "'tag:yaml.org,2002:python/object/apply:os.system'; remove the tag: the config is "
        "plain YAML data (strings, numbers, lists, mappings)"
    )
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("text", ["", "\n\n", "# just a comment\n", "~\n"], ids=repr)
def test_empty_file(tmp_path: Path, text: str) -> None:
    assert error_for(tmp_path, text) == (
        "FILE:1:1: the config is empty; start with 'source: {aws: {regions: [us-east-1]}}' "
        "and 'destinations: [{name: vault, storage: {driver: local, path: ./evacuated}}]'"
    )


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    assert error_for(tmp_path, "# settings\n- source\n- destinations\n") == (
        "FILE:2:1: the top level must be a mapping of settings, got a list; start with "
        "'source: {aws: {regions: [us-east-1]}}' and "
        "'destinations: [{name: vault, storage: {driver: local, path: ./evacuated}}]'"
    )


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "nope.yaml", env={})
    assert str(err.value) == (
        f"{tmp_path / 'nope.yaml'}: config file not found; check the path, or leave out "
        "--config to run on the built-in sandbox"
    )


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "exitplan.yaml"
    path.write_bytes(b"source: \xff\n")
    with pytest.raises(ConfigError, match=r"exitplan.yaml: not UTF-8 text \(byte 8\)"):
        load_config(path, env={})


# -- keys ----------------------------------------------------------------------------


def test_unknown_top_level_key_suggests_the_closest(tmp_path: Path) -> None:
    text = MINIMAL + "safety_margn: 1h\n"
    assert error_for(tmp_path, text) == (
        "FILE:7:1: safety_margn: unknown key; did you mean 'safety_margin'? (known keys: "
        "source, deadline, safety_margin, workspace, priorities, destinations, candidates, "
        "dns, playbook, drill, transfer)"
    )


def test_unknown_nested_key_without_a_close_match(tmp_path: Path) -> None:
    text = MINIMAL.replace("    regions:", "    colour: blue\n    regions:")
    assert error_for(tmp_path, text) == (
        "FILE:3:5: source.aws.colour: unknown key; use one of: profile, regions, endpoint_url"
    )


def test_duplicate_key_in_one_mapping(tmp_path: Path) -> None:
    text = MINIMAL.replace("    regions:", "    profile: a\n    profile: b\n    regions:")
    assert error_for(tmp_path, text) == (
        "FILE:4:5: source.aws.profile: key given twice in the same mapping (first at line 3); "
        "keep one"
    )


def test_missing_required_field_points_at_its_parent(tmp_path: Path) -> None:
    text = MINIMAL.replace("    regions: [us-east-1]\n", "    profile: prod\n")
    assert error_for(tmp_path, text) == (
        "FILE:3:5: source.aws.regions: required field is missing; add it under 'source.aws', "
        "e.g. 'regions: [us-east-1]'"
    )


def test_missing_top_level_section(tmp_path: Path) -> None:
    text = "source:\n  aws: {regions: [us-east-1]}\n"
    assert error_for(tmp_path, text) == (
        "FILE:1:1: destinations: required field is missing; add it at the top level, e.g. "
        "'destinations: [{name: vault, storage: {driver: local, path: ./evacuated}}]'"
    )


# -- types and values -----------------------------------------------------------------


def test_wrong_type_string_for_list(tmp_path: Path) -> None:
    text = MINIMAL.replace("[us-east-1]", "us-east-1")
    assert error_for(tmp_path, text) == (
        "FILE:3:14: source.aws.regions: expected a list, got a string 'us-east-1'; "
        "write it as a list, e.g. regions: [us-east-1]"
    )


def test_wrong_type_string_for_integer(tmp_path: Path) -> None:
    text = MINIMAL + "transfer:\n  concurrency: lots\n"
    assert error_for(tmp_path, text) == (
        "FILE:8:16: transfer.concurrency: 'lots' is not a whole number; write digits only, e.g. 16"
    )


def test_wrong_type_mapping_expected(tmp_path: Path) -> None:
    text = MINIMAL.replace("storage: {driver: local, path: ./evacuated}", "storage: local")
    assert error_for(tmp_path, text) == (
        "FILE:6:14: destinations[0].storage: expected a mapping, got a string 'local'; "
        "write 'driver:' and its options as 'key: value' lines"
    )


def test_wrong_type_bool_where_text_is_expected(tmp_path: Path) -> None:
    text = MINIMAL.replace("    regions:", "    profile: no\n    regions:")
    assert error_for(tmp_path, text) == (
        "FILE:3:14: source.aws.profile: expected a string, got true/false 'no'; "
        "write a plain text value"
    )


def test_wrong_type_null(tmp_path: Path) -> None:
    text = MINIMAL.replace("    regions: [us-east-1]\n", "").replace("  aws:\n", "  aws:\n")
    assert error_for(tmp_path, text) == (
        "FILE:2:7: source.aws: expected a mapping, got nothing (null); "
        "write its settings as 'key: value' lines indented under it"
    )


def test_empty_regions_and_bad_region(tmp_path: Path) -> None:
    assert error_for(tmp_path, MINIMAL.replace("[us-east-1]", "[]")) == (
        "FILE:3:14: source.aws.regions: must list at least one entry; e.g. regions: [us-east-1]"
    )
    assert error_for(tmp_path, MINIMAL.replace("[us-east-1]", "[us-east-1, us-east1]")) == (
        "FILE:3:26: source.aws.regions[1]: 'us-east1' is not an AWS region name; "
        "write it like us-east-1 or eu-west-2"
    )


def test_endpoint_url_must_be_http(tmp_path: Path) -> None:
    text = MINIMAL.replace("    regions:", "    endpoint_url: 127.0.0.1:5000\n    regions:")
    assert error_for(tmp_path, text) == (
        "FILE:3:19: source.aws.endpoint_url: '127.0.0.1:5000' is not an http(s) URL; "
        "write it like http://127.0.0.1:5000"
    )


def test_deadline_syntax_is_checked_at_load_with_its_position(tmp_path: Path) -> None:
    assert error_for(tmp_path, MINIMAL + "deadline: 2021-01-10T23:59\n") == (
        "FILE:7:11: deadline: '2021-01-10T23:59' has no UTC offset or time zone, so the instant "
        "is unknown; add an offset or zone, e.g. '2021-01-10T23:59-08:00', '2021-01-10T23:59Z' "
        "or '2021-01-10 23:59 America/Los_Angeles'"
    )
    message = error_for(tmp_path, MINIMAL + "deadline: next friday\n")
    assert message.startswith(
        "FILE:7:11: deadline: 'next friday' is not a time exitplan understands; accepted forms: "
    )


def test_past_and_relative_deadlines_load_they_are_judged_at_run_time(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, MINIMAL + "deadline: +30h\n"), env={}).deadline == "+30h"
    old = "deadline: 2001-01-01 00:00 America/Los_Angeles\n"
    config = load_config(write(tmp_path, MINIMAL + old), env={})
    assert config.deadline == "2001-01-01 00:00 America/Los_Angeles"


def test_safety_margin(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, MINIMAL + "safety_margin: 0\n"), {}).safety_margin == (
        timedelta(0)
    )
    assert error_for(tmp_path, MINIMAL + "safety_margin: 30\n") == (
        "FILE:7:16: safety_margin: '30' is not a duration; write it as a number with a unit "
        "(d, h, m, s), e.g. 30m, 2h, 1h30m, 1d, 45s, or 0 for none"
    )


def test_transfer_bounds_and_sizes(tmp_path: Path) -> None:
    assert error_for(tmp_path, MINIMAL + "transfer: {concurrency: 0}\n") == (
        "FILE:7:25: transfer.concurrency: 0 is out of range; use a number from 1 to 512"
    )
    assert error_for(tmp_path, MINIMAL + "transfer: {part_size: 1MiB}\n") == (
        "FILE:7:23: transfer.part_size: 1048576 bytes is outside what S3 multipart uploads "
        "allow; use a size from 5MiB to 5GiB"
    )
    assert error_for(tmp_path, MINIMAL + "transfer: {bwlimit: fast}\n") == (
        "FILE:7:21: transfer.bwlimit: 'fast' is not a size; write a number with a unit, e.g. "
        "16MiB, 512KiB, 1GiB, 100MB, or a plain number of bytes"
    )
    assert error_for(tmp_path, MINIMAL + "transfer: {bwlimit: 0}\n") == (
        "FILE:7:21: transfer.bwlimit: must be more than 0 bytes per second; write a size such "
        "as 50MiB, or off for no limit"
    )
    config = load_config(write(tmp_path, MINIMAL + "transfer: {bwlimit: null, part_size: 6MB}\n"))
    assert config.transfer == TransferConfig(16, 6_000_000, None)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("8MiB", 8 * 1024**2),
        ("16mib", 16 * 1024**2),
        ("512KiB", 512 * 1024),
        ("1.5GiB", 1536 * 1024**2),
        ("2GB", 2_000_000_000),
        ("100MB", 100_000_000),
        ("10KB", 10_000),
        ("4096", 4096),
        ("4096 bytes", 4096),
        ("1B", 1),
        ("1TiB", 1024**4),
    ],
)
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text, "transfer.part_size") == size


@pytest.mark.parametrize("text", ["", "MiB", "8 M", "-1MiB", "1e6", "8 mebibytes"])
def test_parse_size_refusals_name_the_field(text: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_size(text, "transfer.bwlimit")
    assert str(err.value) == (
        f"transfer.bwlimit: {text!r} is not a size; write a number with a unit, e.g. 16MiB, "
        "512KiB, 1GiB, 100MB, or a plain number of bytes"
    )


# -- destinations, candidates, dns through the registry ---------------------------------


def test_duplicate_destination_names(tmp_path: Path) -> None:
    text = MINIMAL + "  - {name: vault, storage: {driver: local, path: ./other}}\n"
    assert error_for(tmp_path, text) == (
        "FILE:7:12: destinations[1].name: duplicate destination name 'vault' (first used at "
        "line 5); give each destination a unique name"
    )


def test_duplicate_candidate_names(tmp_path: Path) -> None:
    text = FULL.replace("name: do,", "name: colo,")
    assert error_for(tmp_path, text) == (
        "FILE:26:12: candidates[1].name: duplicate candidate name 'colo' (first used at "
        "line 21); give each candidate a unique name"
    )


def test_destination_name_must_be_usable(tmp_path: Path) -> None:
    assert error_for(tmp_path, MINIMAL.replace("name: vault", "name: my vault/1")) == (
        "FILE:5:11: destinations[0].name: 'my vault/1' is not a usable destination name; use "
        "letters, digits, '.', '_' and '-', starting with a letter or digit"
    )


def test_unknown_storage_driver_lists_the_registry(tmp_path: Path) -> None:
    text = MINIMAL.replace("driver: local", "driver: locl")
    assert error_for(tmp_path, text) == (
        "FILE:6:23: destinations[0].storage.driver: unknown storage driver 'locl'; did you "
        "mean 'local'? known storage drivers: backblaze_b2, digitalocean_spaces, local, minio, "
        "s3, wasabi"
    )


def test_unknown_compute_kind_lists_the_registry(tmp_path: Path) -> None:
    text = FULL.replace("kind: ssh-pool", "kind: kubernetes")
    assert error_for(tmp_path, text) == (
        "FILE:22:11: candidates[0].kind: unknown compute kind 'kubernetes'; known compute "
        "kinds: libcloud, local, ssh-pool"
    )


def test_unknown_dns_driver_lists_the_registry(tmp_path: Path) -> None:
    text = FULL.replace("driver: powerdns", "driver: cloudflare")
    assert error_for(tmp_path, text) == (
        "FILE:27:15: dns.driver: unknown dns driver 'cloudflare'; known dns drivers: local, powerdns"
    )


def test_option_not_declared_by_the_provider(tmp_path: Path) -> None:
    text = MINIMAL.replace("path: ./evacuated", "pth: ./evacuated")
    assert error_for(tmp_path, text) == (
        "FILE:6:30: destinations[0].storage.pth: unknown key for storage driver 'local'; "
        "did you mean 'path'? (known keys: driver, path)"
    )
    text = FULL.replace("size: s-4vcpu-8gb", "flavor: s-4vcpu-8gb")
    assert error_for(tmp_path, text) == (
        "FILE:26:74: candidates[1].flavor: unknown key for compute kind 'libcloud'; use one of: "
        "name, kind, driver, key, secret, size, region, image, host, port, secure, ssh_port, ssh_user"
    )


def test_missing_driver_and_missing_required_option(tmp_path: Path) -> None:
    text = MINIMAL.replace("driver: local, ", "")
    assert error_for(tmp_path, text) == (
        "FILE:6:14: destinations[0].storage.driver: required field is missing; add it under "
        "'destinations[0].storage' (one of: backblaze_b2, digitalocean_spaces, local, minio, "
        "s3, wasabi)"
    )
    text = MINIMAL.replace(", path: ./evacuated", "")
    assert error_for(tmp_path, text) == (
        "FILE:6:14: destinations[0].storage.path: required field is missing; add it under "
        "'destinations[0].storage' (directory that holds the copies)"
    )


def test_provider_option_of_the_wrong_type(tmp_path: Path) -> None:
    text = FULL.replace("host: ns1.example.net,", "host: ns1.example.net, port: [8081],")
    assert error_for(tmp_path, text) == (
        "FILE:27:54: dns.port: expected a whole number, got a list; write digits only, e.g. 8081"
    )


def test_ssh_pool_host_needs_a_pinned_host_key(tmp_path: Path) -> None:
    text = FULL.replace(f', host_key: "{SECOND_HOST_KEY}"', "")
    assert error_for(tmp_path, text) == (
        "FILE:25:9: candidates[0].hosts[1].host_key: required field is missing; add it under "
        "'candidates[0].hosts[1]' (the host's public key, pinned; get it with 'ssh-keyscan -t "
        "ed25519 ADDRESS' and paste the 'ssh-ed25519 AAAA...' part)"
    )


def test_ssh_pool_host_unknown_key(tmp_path: Path) -> None:
    text = FULL.replace("port: 2222", "prot: 2222")
    assert error_for(tmp_path, text) == (
        "FILE:25:33: candidates[0].hosts[1].prot: unknown key for an ssh-pool host; did you "
        "mean 'port'? (known keys: address, port, user, host_key, key_file)"
    )


def test_ssh_pool_needs_hosts(tmp_path: Path) -> None:
    text = MINIMAL + "candidates:\n  - {name: colo, kind: ssh-pool, hosts: []}\n"
    assert error_for(tmp_path, text) == (
        "FILE:8:41: candidates[0].hosts: must list at least one entry; e.g. "
        "hosts: [{address: 203.0.113.10, user: deploy, host_key: ...}]"
    )


def test_encrypt_needs_recipients(tmp_path: Path) -> None:
    text = MINIMAL + "    encrypt: {}\n"
    assert error_for(tmp_path, text) == (
        "FILE:7:14: destinations[0].encrypt.recipients: required field is missing; add it "
        "under 'destinations[0].encrypt', e.g. 'recipients: [age1...]'"
    )


def test_priority_kind_must_match_a_resource_kind(tmp_path: Path) -> None:
    text = MINIMAL + "priorities:\n  - {tier: critical, match: {kind: [rds, lambda]}}\n"
    assert error_for(tmp_path, text) == (
        "FILE:8:42: priorities[0].match.kind[1]: 'lambda' matches no resource kind; kinds are: "
        "s3, ebs, rds, dynamodb, route53, secrets, ec2"
    )
    text = MINIMAL + "priorities:\n  - {tier: critical, match: {buckets: media}}\n"
    assert error_for(tmp_path, text) == (
        "FILE:8:30: priorities[0].match.buckets: unknown key; did you mean 'bucket'? "
        "(known keys: kind, bucket, table, zone, name)"
    )


def test_priority_needs_a_tier(tmp_path: Path) -> None:
    text = MINIMAL + "priorities:\n  - match: {kind: s3}\n"
    assert error_for(tmp_path, text) == (
        "FILE:8:5: priorities[0].tier: required field is missing; add it under "
        "'priorities[0]', e.g. 'tier: critical'"
    )


# -- sandbox and digest -------------------------------------------------------------


def test_default_sandbox_config(tmp_path: Path) -> None:
    config = default_sandbox_config(tmp_path)
    assert config.source.aws == AwsSourceConfig(regions=("us-east-1",), sandbox=True)
    assert config.destinations == (
        DestinationConfig("sandbox", "local", {"path": tmp_path / "exitplan-sandbox"}),
    )
    assert config.workspace == tmp_path / ".exitplan"
    assert [(p.tier, dict(p.match)) for p in config.priorities] == [
        ("critical", {"kind": ("rds", "secrets", "route53", "dynamodb")}),
        ("important", {"kind": ("s3",), "bucket": ("microblog-user-media",)}),
        ("best-effort", {"kind": ("s3",)}),
        ("best-effort", {"kind": ("ebs", "ec2")}),
    ]
    assert config.transfer == TransferConfig()
    assert config.source_file is None
    assert config.safety_margin == timedelta(minutes=30)


# -- what cannot be a config: refused before parsing -----------------------------------


def test_a_character_device_is_refused_without_reading_it() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(Path("/dev/zero"), env={})
    assert str(err.value) == (
        "/dev/zero: is a character device, not a config file; give the path of the YAML file itself"
    )


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "exitplan.yaml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match=r"exitplan.yaml: is a named pipe \(FIFO\), not a "):
        load_config(fifo, env={})


def test_a_directory_or_a_link_to_a_device_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r": is a directory, not a config file; give the path"):
        load_config(tmp_path, env={})
    link = tmp_path / "exitplan.yaml"
    link.symlink_to("/dev/zero")
    with pytest.raises(ConfigError, match=r"exitplan.yaml: is a character device"):
        load_config(link, env={})


def test_a_file_over_the_limit_is_refused_from_its_size_before_parsing(tmp_path: Path) -> None:
    """50 MB used to take minutes and gigabytes before an error on line 8."""
    big = tmp_path / "exitplan.yaml"
    with big.open("wb") as out:
        out.write(MINIMAL.encode())
        out.truncate(50 * 1000**2)  # a sparse file: no need to write 50 MB
    with pytest.raises(ConfigError) as err:
        load_config(big, env={})
    assert str(err.value) == (
        f"{big}: is over 1.0 MiB, more than a config file may be; a config file is a few "
        "kilobytes of YAML: check that this is the right file"
    )


def test_the_limit_is_exact_and_names_what_is_read(tmp_path: Path) -> None:
    path = tmp_path / "playbook.yaml"
    path.write_bytes(b"#" * MAX_INPUT_BYTES)
    assert len(read_bounded_text(path, what="playbook")) == MAX_INPUT_BYTES
    path.write_bytes(b"#" * (MAX_INPUT_BYTES + 1))
    with pytest.raises(ConfigError, match=r"more than a playbook may be; a playbook is a few"):
        read_bounded_text(path, what="playbook")
    with pytest.raises(ConfigError, match=r"is over 10 bytes"):
        read_bounded_text(tmp_path / "playbook.yaml", what="playbook", limit=10)
    with pytest.raises(ConfigError, match=r"nope.yaml: playbook not found; check the path$"):
        read_bounded_text(tmp_path / "nope.yaml", what="playbook")


def test_a_file_that_grows_past_its_size_is_cut_at_the_limit_plus_one() -> None:
    """/proc files report size 0: the read itself stops at limit + 1 bytes."""
    with pytest.raises(ConfigError, match=r"/proc/self/environ: is over 1 bytes"):
        read_bounded_text(Path("/proc/self/environ"), what="config file", limit=1)


def test_unreadable_file_says_why(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        path = Path("/proc/self/mem")  # root reads anything else
    else:
        path = tmp_path / "exitplan.yaml"
        path.write_text(MINIMAL)
        path.chmod(0)
    with pytest.raises(ConfigError, match=r"cannot read the config file \(.+\); check the path"):
        load_config(path, env={})


# -- nesting ------------------------------------------------------------------------------


def test_twenty_thousand_levels_of_nesting_are_refused_not_a_recursion_error(
    tmp_path: Path,
) -> None:
    text = "deadline: " + "[" * 20_000 + "]" * 20_000 + "\n"
    assert error_for(tmp_path, MINIMAL + text) == (
        "FILE:7:74: invalid YAML: nested deeper than 64 levels; a config nests a few levels "
        "of lists and mappings; look for brackets that never close or an alias that repeats "
        "itself"
    )
    block = "".join(f"{'  ' * i}k{i}:\n" for i in range(500))
    assert "nested deeper than 64 levels" in error_for(tmp_path, block)


def test_aliases_cannot_stack_nesting_past_the_limit_or_loop(tmp_path: Path) -> None:
    levels = ["a0: &a0 [" + "[" * 50 + "]" * 50 + "]"]
    levels += [f"a{i}: &a{i} [[[[[[[[[[*a{i - 1}]]]]]]]]]]" for i in range(1, 40)]
    assert "nested deeper than 64 levels" in error_for(tmp_path, "\n".join(levels) + "\n")
    assert error_for(tmp_path, MINIMAL + "priorities: &p [*p]\n") == (
        "FILE:7:13: invalid YAML: an alias refers to a node that contains it; a config nests a "
        "few levels of lists and mappings; look for brackets that never close or an alias that "
        "repeats itself"
    )


# -- every problem at once ----------------------------------------------------------------


def test_every_independent_problem_is_reported_at_once_in_file_order(tmp_path: Path) -> None:
    text = dedent(
        """
        source:
          aws: {regions: [us-east-1, useast2, eu-west-1, eu_west_9]}
        deadline: next friday
        safety_margin: 30
        destinations:
          - {name: vault, storage: {driver: local, pth: ./evacuated}}
          - {name: vault, storage: {driver: s3, host: s3.example.net, container: c, key: k}}
        candidates:
          - {name: colo, kind: ssh-pool, hosts: [{address: 10.0.0.1, user: u, host_key: nope}]}
        transfer: {concurrency: 0, bwlimit: 0, part_size: 1MiB}
        colour: blue
        """
    )
    message = error_for(tmp_path, text, env={})
    lines = message.splitlines()
    assert lines[0] == "13 problems:"
    assert [line.split(": ", 2)[:2] for line in lines[1:]] == [
        ["FILE:2:30", "source.aws.regions[1]"],
        ["FILE:2:50", "source.aws.regions[3]"],
        ["FILE:3:11", "deadline"],
        ["FILE:4:16", "safety_margin"],
        ["FILE:6:44", "destinations[0].storage.pth"],
        ["FILE:7:12", "destinations[1].name"],
        ["FILE:7:28", "destinations[1].storage.secret"],
        ["FILE:7:82", "destinations[1].storage.key"],
        ["FILE:9:81", "candidates[0].hosts[0].host_key"],
        ["FILE:10:25", "transfer.concurrency"],
        ["FILE:10:37", "transfer.bwlimit"],
        ["FILE:10:51", "transfer.part_size"],
        ["FILE:11:1", "colour"],
    ]
    assert "did you mean 'path'?" in lines[5]  # and no second line for the missing 'path'


def test_one_problem_prints_as_before_and_a_missing_section_does_not_hide_others(
    tmp_path: Path,
) -> None:
    text = "source:\n  aws: {regions: [us-east1]}\n"
    assert error_for(tmp_path, text).splitlines() == [
        "2 problems:",
        "FILE:1:1: destinations: required field is missing; add it at the top level, e.g. "
        "'destinations: [{name: vault, storage: {driver: local, path: ./evacuated}}]'",
        "FILE:2:19: source.aws.regions[0]: 'us-east1' is not an AWS region name; write it like "
        "us-east-1 or eu-west-2",
    ]
    err = ConfigError("only one")
    assert (str(err), err.findings, err.exit_code) == ("only one", ("only one",), 2)


# -- pinned host keys ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "why"),
    [
        ("ssh-ed25519 AAAAC3", "host_key of type 'ssh-ed25519' cannot be parsed"),
        ("AAAAC3NzaC1lZDI1NTE5AAAAIIqI4910CfGV", "is not '<type> <base64>'"),
        ("ssh-ed25519 !!!notbase64!!!", "host_key of type 'ssh-ed25519' cannot be parsed"),
        ("ssh-rsa " + HOST_KEY.split()[1], "host_key of type 'ssh-rsa' cannot be parsed"),
    ],
)
def test_a_pinned_host_key_that_is_not_a_key_is_refused_at_its_position(
    tmp_path: Path, key: str, why: str
) -> None:
    text = MINIMAL + (
        "candidates:\n  - name: colo\n    kind: ssh-pool\n"
        f"    hosts: [{{address: 10.0.0.1, user: deploy, host_key: '{key}'}}]\n"
    )
    message = error_for(tmp_path, text)
    assert message.startswith("FILE:10:57: candidates[0].hosts[0].host_key: "), message
    assert why in message
    assert message.endswith(
        "copy the host's public key line, e.g. from /etc/ssh/ssh_host_ed25519_key.pub"
    )


# -- transfer limits: one rule for the config and the command line ------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [("50MiB", 50 * 1024**2), ("1", 1), (4096, 4096), ("off", None), ("OFF", None)],
)
def test_parse_bwlimit(value: str | int, expected: int | None) -> None:
    assert parse_bwlimit(value, "--bwlimit") == expected


@pytest.mark.parametrize("value", ["0", 0, "0MiB", "0.1B"])
def test_a_zero_bwlimit_is_refused_not_read_as_unlimited(value: str | int) -> None:
    with pytest.raises(ConfigError) as err:
        parse_bwlimit(value, "--bwlimit")
    assert str(err.value) == (
        "--bwlimit: must be more than 0 bytes per second; write a size such as 50MiB, or off "
        "for no limit"
    )


def test_bwlimit_off_in_the_config_means_no_limit(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL + "transfer: {bwlimit: off}\n"), env={})
    assert config.transfer.bwlimit is None


@pytest.mark.parametrize(("value", "expected"), [("1", 1), (16, 16), ("512", 512)])
def test_parse_concurrency(value: str | int, expected: int) -> None:
    assert parse_concurrency(value, "--concurrency") == expected


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (0, "0 is out of range; use a number from 1 to 512"),
        ("0", "0 is out of range; use a number from 1 to 512"),
        (513, "513 is out of range; use a number from 1 to 512"),
        ("-3", "'-3' is not a whole number; write digits only, e.g. 16"),
        ("many", "'many' is not a whole number; write digits only, e.g. 16"),
    ],
)
def test_a_zero_or_wrong_concurrency_is_refused_not_defaulted(value: str | int, why: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_concurrency(value, "--concurrency")
    assert str(err.value) == f"--concurrency: {why}"


# -- the sandbox as a config file ---------------------------------------------------------


def test_source_sandbox_true_is_the_built_in_sandbox(tmp_path: Path) -> None:
    text = MINIMAL.replace("  aws:\n    regions: [us-east-1]\n", "  sandbox: true\n")
    config = load_config(write(tmp_path, text), env={})
    assert config.source == default_sandbox_config(tmp_path).source
    assert config.source.aws.sandbox


def test_source_sandbox_must_be_true_and_alone(tmp_path: Path) -> None:
    text = MINIMAL.replace("  aws:\n", "  sandbox: false\n  aws:\n")
    assert error_for(tmp_path, text) == (
        "FILE:2:12: source.sandbox: only 'sandbox: true' is meaningful; write it for the "
        "built-in sandbox, or remove it and describe the account under 'aws:'"
    )
    text = MINIMAL.replace("  aws:\n", "  sandbox: true\n  aws:\n")
    assert error_for(tmp_path, text) == (
        "FILE:3:3: source.aws: the built-in sandbox has its own account; remove either 'aws:' "
        "or 'sandbox: true'"
    )
    assert error_for(tmp_path, MINIMAL.replace("  aws:\n    regions: [us-east-1]\n", "  {}\n"))


def test_the_written_sandbox_config_loads_as_the_built_in_sandbox(tmp_path: Path) -> None:
    path = tmp_path / "exitplan.yaml"
    write_sandbox_config(path)
    config = load_config(path, env={})
    assert dataclasses.replace(config, source_file=None) == default_sandbox_config(tmp_path)
    text = path.read_text()
    assert text.startswith("# exitplan config")
    assert "exitplan migrate --config exitplan.yaml" in text
    # Every setting is explained: no line of YAML without a comment in its block.
    assert sum(1 for line in text.splitlines() if line.lstrip().startswith("#")) >= 15


def test_writing_the_sandbox_config_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "exitplan.yaml"
    path.write_text("mine\n")
    with pytest.raises(ConfigError) as err:
        write_sandbox_config(path)
    assert str(err.value) == (
        f"{path}: already exists; config init never overwrites a file: give another path, or "
        "move this one away first"
    )
    assert path.read_text() == "mine\n"
    with pytest.raises(ConfigError, match=r"cannot write the config \(No such file or dir"):
        write_sandbox_config(tmp_path / "no" / "such" / "dir.yaml")
