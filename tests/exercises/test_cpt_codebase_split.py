"""bench/cpt_codebase.py: the code base is split by file, the same way every time, and the loop's continued
pre-training reads exactly the training files: every subpackage, never a validation or test file."""

import importlib.util

from codealign.config import load_config
from codealign.exercises.training_data import load_training_data
from tests.conftest import ROOT


def bench_module():
    spec = importlib.util.spec_from_file_location("cpt_codebase", ROOT / "bench" / "cpt_codebase.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_loop_trains_on_the_training_files_only_subpackages_included(tmp_path, data_dir):
    bench = bench_module()
    package = tmp_path / "pkg"
    names = ["__init__.py", "core.py", "util.py", "sub/__init__.py", "sub/parse.py", "sub/deep/tz.py",
             "sub/deep/win.py", "zone/__init__.py", "zone/rebuild.py"]
    for i, name in enumerate(names):
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_text(f"def function_{i}(value):\n    return value * {i} + {i * 7}  # file {i}\n")

    parts = bench.split_files(package)
    assert parts == bench.split_files(package)  # fixed: the same split every run
    assert sorted(sum(parts.values(), [])) == sorted(names)  # every file in exactly one part
    # in path order, every 4th a test file and every 8th a validation file
    assert parts["test"] == ["sub/deep/tz.py", "zone/__init__.py"]
    assert parts["validation"] == ["__init__.py", "zone/rebuild.py"]

    dirs = bench.materialize(package, parts, tmp_path / "split")
    cfg = load_config(ROOT / "configs" / "cpt.yaml",
                      bench.recipe_overrides(dirs["train"]) + [f"data.data_dir={data_dir}"])
    corpus = load_training_data(cfg).corpus
    assert sorted(ex.source for ex in corpus) == sorted(f"corpus:{rel}" for rel in parts["train"])
