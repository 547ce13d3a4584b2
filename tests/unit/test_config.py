"""Config files as users write them: values, resolved paths, secrets, and each error's text."""

from __future__ import annotations

import textwrap
from datetime import timedelta
from pathlib import Path

import pytest

from orchestrator.config import (
    AwsSourceConfig,
    Config,
    DestinationConfig,
    Secret,
    TransferConfig,
    config_digest,
    default_sandbox_config,
    load_config,
    parse_config_text,
    parse_size,
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
      - {address: 203.0.113.10, user: deploy, host_key: "ssh-ed25519 AAAAC3", key_file: keys/id}
      - {address: 203.0.113.11, port: 2222, user: deploy, host_key: "ssh-ed25519 AAAAC4"}
  - {name: do, kind: libcloud, driver: digitalocean, key: "${DO_TOKEN}", size: s-4vcpu-8gb}
dns: {driver: powerdns, host: ns1.example.net, key: "${PDNS_KEY}"}
playbook: playbooks/web-service.yaml
transfer: {concurrency: 8, part_size: 8MiB, bwlimit: 50MiB}
"""

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
            "host_key": "ssh-ed25519 AAAAC3",
            "key_file": tmp_path / "keys" / "id",
        },
        {
            "address": "203.0.113.11",
            "port": 2222,
            "user": "deploy",
            "host_key": "ssh-ed25519 AAAAC4",
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
              - &base {address: 10.0.0.1, user: deploy, host_key: "ssh-ed25519 K"}
              - {<<: *base, address: 10.0.0.2}
        """
    )
    config = load_config(write(tmp_path, text), env={})
    hosts = config.candidates[0].options["hosts"]
    assert [h["address"] for h in hosts] == ["10.0.0.1", "10.0.0.2"]  # type: ignore[attr-defined]
    assert hosts[1]["host_key"] == "ssh-ed25519 K"  # type: ignore[index]


def test_parse_config_text_takes_its_own_names_and_env(tmp_path: Path) -> None:
    config = parse_config_text(MINIMAL, "inline", tmp_path / "base", env={})
    assert config.destinations[0].options["path"] == tmp_path / "base" / "evacuated"
    assert config.source_file is None
    with pytest.raises(ConfigError, match=r"^inline:1:1: destinations: required field"):
        parse_config_text("source: {aws: {regions: [us-east-1]}}\n", "inline", tmp_path, {})


# -- secrets never show ----------------------------------------------------------


def test_secrets_never_appear_in_reprs_or_digests(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, FULL), env=ENV)
    secret = config.destinations[1].options["secret"]
    assert repr(secret) == str(secret) == f"{secret}" == "Secret('***')"
    for shown in (repr(config), str(config), repr(config.destinations), config_digest(config)):
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
        "dns, playbook, transfer)"
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
        "FILE:8:16: transfer.concurrency: expected a whole number, got a string 'lots'; "
        "write digits only, e.g. 8081"
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
        "FILE:7:21: transfer.bwlimit: must be more than 0; write null (or leave it out) for "
        "no limit"
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
    text = FULL.replace(', host_key: "ssh-ed25519 AAAAC4"', "")
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


def test_digest_is_stable_and_tracks_settings_not_secrets_or_location(tmp_path: Path) -> None:
    first = load_config(write(tmp_path, FULL), env=ENV)
    again = load_config(write(tmp_path, FULL), env=ENV)
    assert config_digest(first) == config_digest(again)
    assert len(config_digest(first)) == 64

    rotated = load_config(write(tmp_path, FULL), env={**ENV, "B2_KEY": "another-secret"})
    assert config_digest(rotated) == config_digest(first)

    copy = tmp_path / "copy.yaml"
    copy.write_text(FULL)
    assert config_digest(load_config(copy, env=ENV)) == config_digest(first)

    changed = load_config(write(tmp_path, FULL.replace("concurrency: 8", "concurrency: 9")), ENV)
    assert config_digest(changed) != config_digest(first)
    renamed = load_config(
        write(tmp_path, FULL.replace("${B2_KEY}", "${B2_APP_KEY}")),
        env={**ENV, "B2_APP_KEY": CANARY},
    )
    assert config_digest(renamed) != config_digest(first)


def test_digest_of_the_sandbox_depends_on_its_directory(tmp_path: Path) -> None:
    a = default_sandbox_config(tmp_path / "a")
    assert config_digest(a) == config_digest(default_sandbox_config(tmp_path / "a"))
    assert config_digest(a) != config_digest(default_sandbox_config(tmp_path / "b"))
    assert isinstance(a, Config)
