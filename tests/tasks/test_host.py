from pathlib import Path

from tasks.host import cpu_model


def test_cpu_model_names_the_model_and_counts_logical_cores(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: AMD EPYC 9B14\nflags\t: fpu\n\n"
                    "processor\t: 1\nmodel name\t: AMD EPYC 9B14\nflags\t: fpu\n")
    assert cpu_model(info) == "AMD EPYC 9B14 x 2"


def test_cpu_model_without_cpuinfo_says_unknown(tmp_path: Path) -> None:
    assert cpu_model(tmp_path / "missing") == "unknown CPU"
    (tmp_path / "empty").write_text("processor\t: 0\n")
    assert cpu_model(tmp_path / "empty") == "unknown CPU"
