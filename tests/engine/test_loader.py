from ldmdetect.engine.loader import load_each
from ldmdetect.io.images import load_image


def _size(path: str) -> tuple[int, int]:
    return load_image(path).size


def _write_files(tmp_path, photo_dir):
    good = sorted(photo_dir.glob("*.png"))[:2]
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return [good[0], bad, good[1]]


def test_failures_become_rows_in_order(tmp_path, photo_dir):
    paths = _write_files(tmp_path, photo_dir)
    results = list(load_each(paths, _size))
    assert [r.index for r in results] == [0, 1, 2]
    assert results[0].error is None and results[0].value == load_image(paths[0]).size
    assert results[1].value is None and results[1].error
    assert results[2].error is None


def test_worker_processes_give_the_same_results(tmp_path, photo_dir):
    paths = _write_files(tmp_path, photo_dir)
    serial = [(r.path, r.value, r.error) for r in load_each(paths, _size)]
    parallel = [(r.path, r.value, r.error) for r in load_each(paths, _size, num_workers=2)]
    assert serial == parallel
