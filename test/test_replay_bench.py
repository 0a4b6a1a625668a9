"""`bench data` pieces run and report positive rates (speed itself is the benchmark's business)."""

from vjepa2_ros.replay.bench import bench_bags, bench_decode


def test_bench_decode_and_bags_report_rates(tmp_path):
    rows = bench_decode(tmp_path, frames=12, size=(32, 48), repeats=1) + bench_bags(tmp_path, frames=6, size=(32, 48))
    assert len(rows) == 8
    assert all(rate > 0 for _, rate, _ in rows)
    assert rows[0][2] == "1.00x" and "every 4th" in rows[2][0]
