from pathlib import Path

import pytest

from ldmdetect.io.hub import (
    OFFLINE_REASON,
    SourceUnavailable,
    hub_kwargs,
    hub_offline,
    hub_reachable,
    is_local_source,
    location,
    resolve_directory,
    source_error,
)

# (source, is it a local path?) -- the one rule every loader follows.
RULE = [
    # hub repo ids: "name" or "owner/name"
    ("stabilityai/stable-diffusion-2-1", False),
    ("Salesforce/blip2-opt-2.7b", False),
    ("timm/resnet18.a1_in1k", False),
    ("gpt2", False),
    ("my-detector_v1.2", False),
    # a relative folder that does not exist but looks like owner/name reads as a hub id
    ("runs/x", False),
    # paths by their shape, whether they exist or not
    ("/abs/path/model", True),
    ("/", True),
    ("~/models/sd", True),
    ("~", True),
    ("./runs/x", True),
    ("../models/sd", True),
    (".", True),
    ("runs/demo/detector", True),  # two slashes: not a repo id
    ("C:\\models\\sd", True),
    ("C:/models/sd", True),
    ("models\\sd", True),
    ("owner/name with space", True),  # the hub refuses spaces
    ("owner/na--me", True),  # and double dashes
    ("", True),
]


@pytest.mark.parametrize(("source", "local"), RULE)
def test_path_or_hub_id_rule(source, local):
    assert is_local_source(source) is local
    assert is_local_source(Path(source))  # a Path is a path by its type


def test_an_existing_relative_folder_is_local_whatever_its_shape(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert not is_local_source("runs/x")
    (tmp_path / "runs" / "x").mkdir(parents=True)
    assert is_local_source("runs/x")
    (tmp_path / "gpt2").write_text("a file")
    assert is_local_source("gpt2")


def test_location_expands_home_and_leaves_hub_ids_alone(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert location("~/models/sd") == str(tmp_path / "models" / "sd")
    assert location("owner/name") == "owner/name"


def test_offline_is_read_at_call_time(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub_offline()
    assert not hub_reachable()  # answers at once, without asking the network
    assert hub_kwargs("v1") == {"revision": "v1", "local_files_only": True}


def test_source_error_is_one_line_naming_source_and_fix():
    local = source_error("a detector", "./missing", FileNotFoundError("no\nsecond line"))
    assert isinstance(local, SourceUnavailable)
    assert str(local) == (
        "cannot load a detector from the local path './missing': no. "
        "Pass an existing directory that holds it."
    )
    hub = source_error("a VAE", "owner/name", OFFLINE_REASON, fix="Do this.")
    assert "\n" not in str(hub)
    assert "hub id 'owner/name'" in str(hub) and "no local path by that name" in str(hub)
    assert str(hub).endswith(f"{OFFLINE_REASON}. Do this.")
    default_fix = str(source_error("a VAE", "owner/name", "gone"))
    assert "hf download owner/name" in default_fix and "HF_HUB_OFFLINE" in default_fix

    class Custom(SourceUnavailable):
        pass

    assert type(source_error("x", "y", "z", error=Custom)) is Custom


def test_resolve_directory(tmp_path, monkeypatch):
    assert resolve_directory(tmp_path, what="a thing") == tmp_path
    with pytest.raises(SourceUnavailable, match=r"local path .*nope'.*no such directory"):
        resolve_directory(tmp_path / "nope", what="a thing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(SourceUnavailable, match="not a directory"):
        resolve_directory(tmp_path / "file", what="a thing")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SourceUnavailable) as info:
        resolve_directory("nobody/nothing", what="a thing")
    assert str(info.value).startswith("cannot load a thing from the hub id 'nobody/nothing'")
    assert OFFLINE_REASON in str(info.value)
