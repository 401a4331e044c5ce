"""The package's public names stay importable from ``ldmdetect.engine.synris``."""

import ldmdetect.engine.synris as synris


def test_every_public_name_is_importable_from_the_package():
    # The names the single-module ldmdetect.engine.synris exported before it became a package.
    public = {
        "GivenPairs",
        "Pair",
        "PoolIndex",
        "SynRISConfig",
        "SynRISResult",
        "SynRISRow",
        "build_pool_index",
        "embed_files",
        "greedy_assignment",
        "read_pairs_csv",
        "read_pairs_jsonl",
        "run_synris",
        "synris_row",
        "write_contact_sheet",
        "write_pairs_csv",
    }
    assert public <= set(synris.__all__)
    assert [name for name in sorted(public) if not hasattr(synris, name)] == []
