"""Scale-out: torchrun (2 gloo processes) and --shard + merge give the statistics of one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lens_steer.cli import main
from lens_steer.distributed import World, deal, parse_shard
from lens_steer.errors import LensSteerError
from lens_steer.stats import Stats, merge_shards

ARGS = ["--langs", "en,fr,ru,zh", "--quiet", "--top-rate", "0.1", "--batch-size", "2", "--n-sentence-means", "5"]


def _identify_args(model_dir, corpus_dir, out, *extra) -> list[str]:
    return ["identify", "--model", str(model_dir), "--corpus", "files", "--corpus-path", str(corpus_dir),
            "--out", str(out), *ARGS, *extra]


def _torchrun(tmp_path: Path, *args: str, nproc: int = 2) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)


def _assert_equivalent(a: Stats, b: Stats, exact: bool) -> None:
    assert a.languages == b.languages
    for name in ("over_zero", "n_tokens", "n_sentences", "sent_means"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert a.resid_sum is not None and b.resid_sum is not None  # residual sums go through the same merge
    for name in ("act_sum", "act_sqsum", "resid_sum"):
        if exact:
            assert torch.equal(getattr(a, name), getattr(b, name)), name
        else:
            torch.testing.assert_close(getattr(a, name), getattr(b, name), rtol=1e-9, atol=1e-12)
    for kind in ("max", "median"):
        assert torch.equal(a.sentence_stat(kind), b.sentence_stat(kind)), kind
    # The residual covariance's moments (lens_steer.resid_cov): pooled over languages, so a shard's pool adds in
    # another order than torchrun's per-language parts: equal up to float64 rounding on both paths.
    assert a.resid_moments is not None and b.resid_moments is not None
    assert torch.equal(a.resid_moments.n, b.resid_moments.n)
    for name in ("total", "outer"):
        torch.testing.assert_close(getattr(a.resid_moments, name), getattr(b.resid_moments, name),
                                   rtol=1e-9, atol=1e-9)
    assert a.folds is not None and b.folds is not None  # the folds go through the same merge, exactly
    for name in ("over_zero", "n_tokens", "n_sentences", "sent_fold"):
        assert torch.equal(getattr(a.folds, name), getattr(b.folds, name)), f"folds.{name}"


def test_deal_balances_and_is_deterministic():
    owners = deal([9, 8, 1, 1, 1, 7], 2)
    load = [sum(c for c, r in zip([9, 8, 1, 1, 1, 7], owners) if r == k) for k in range(2)]
    assert owners == deal([9, 8, 1, 1, 1, 7], 2) and abs(load[0] - load[1]) <= 9  # LPT: within one unit
    assert deal([3, 2], 1) == [0, 0] and deal([], 4) == []
    assert World(1, 2).mine(owners) == [i for i, r in enumerate(owners) if r == 1]


@pytest.mark.parametrize("bad", ["2/2", "-1/2", "1", "a/b", "0/0"])
def test_bad_shard_is_one_line(bad):
    with pytest.raises(LensSteerError, match="--shard"):
        parse_shard(bad)


@pytest.fixture(scope="module")
def runs(tiny_dirs, tmp_path_factory):
    """One process, torchrun on 2 gloo ranks, and 2 shards merged: the same command on the same corpus."""
    import helpers

    root = tmp_path_factory.mktemp("scale")
    corpus = root / "corpus"
    corpus.mkdir()
    for code in ("en", "fr", "ru", "zh"):
        (corpus / f"{code}.txt").write_text("\n".join(helpers.SENTENCES[code]) + "\n", encoding="utf-8")
    model = tiny_dirs["qwen2"]
    assert main(_identify_args(model, corpus, root / "one")) == 0
    done = _torchrun(root, "-m", "lens_steer.cli", *_identify_args(model, corpus, root / "two"))
    assert done.returncode == 0, done.stderr[-3000:]
    for i in range(2):
        assert main(_identify_args(model, corpus, root / f"shard{i}", "--shard", f"{i}/2")) == 0
    assert main(["merge", str(root / "shard0"), str(root / "shard1"), "--out", str(root / "merged")]) == 0
    return root, done


def test_torchrun_equals_one_process(runs):
    root, done = runs
    one, two = Stats.load(root / "one"), Stats.load(root / "two")
    _assert_equivalent(one, two, exact=False)
    assert json.loads((root / "one/neurons.json").read_text())["neurons"] == \
        json.loads((root / "two/neurons.json").read_text())["neurons"]
    manifest = json.loads((root / "two/manifest.json").read_text())
    assert manifest["world_size"] == 2
    for k, code in enumerate(manifest["languages"]):
        per_rank = manifest["tokens_per_rank"][code]
        assert len(per_rank) == 2 and sum(per_rank) == int(two.n_tokens[k]) and min(per_rank) > 0
    assert json.loads((root / "one/manifest.json").read_text())["world_size"] == 1
    assert done.stdout.count("language-neuron assignments") == 1  # rank 0 alone prints


def test_shards_merged_equal_torchrun_exactly(runs):
    root, _ = runs
    merged, two = Stats.load(root / "merged"), Stats.load(root / "two")
    _assert_equivalent(merged, two, exact=True)  # one merge function behind both paths: the same bits
    _assert_equivalent(merged, Stats.load(root / "one"), exact=False)
    assert (root / "merged/neurons.json").read_text() != "" and \
        json.loads((root / "merged/neurons.json").read_text())["neurons"] == \
        json.loads((root / "one/neurons.json").read_text())["neurons"]
    assert not (root / "shard0/neurons.json").exists()  # a shard identifies nothing


def test_merge_refuses_missing_duplicate_and_mixed_shards(runs, tmp_path, capsys, corpus_dir, tiny_dirs):
    root, _ = runs
    s0, s1 = Stats.load(root / "shard0"), Stats.load(root / "shard1")
    with pytest.raises(LensSteerError, match=r"missing \[1\]"):
        merge_shards([s0])
    with pytest.raises(LensSteerError, match=r"duplicate \[0\]"):
        merge_shards([s0, s0])
    with pytest.raises(LensSteerError, match="shard run"):
        merge_shards([Stats.load(root / "one"), s1])
    other = tmp_path / "other1"
    assert main(_identify_args(tiny_dirs["qwen2"], corpus_dir, other, "--shard", "1/2", "--site", "post")) == 0
    out = tmp_path / "merged"
    assert main(["merge", str(root / "shard0"), str(other), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "differs from shard 0 in" in err[0] and "site" in err[0], err
    assert not out.exists()  # nothing half-written


def test_a_failing_rank_stops_every_rank_with_one_message(tmp_path):
    script = tmp_path / "fail.py"
    script.write_text(
        "import sys\n"
        "from lens_steer import distributed\n"
        "from lens_steer.errors import LensSteerError\n"
        "world = distributed.init()\n"
        "try:\n"
        "    distributed.check_all(ValueError('boom on one rank') if world.rank == 1 else None)\n"
        "except LensSteerError as exc:\n"
        "    print(f'rank {world.rank}: {exc}')\n"
        "    sys.exit(2)\n"
        "finally:\n"
        "    distributed.shutdown()\n")
    done = _torchrun(tmp_path, str(script))
    assert done.returncode != 0
    assert "rank 0: rank 1 of 2 failed: boom on one rank" in done.stdout
    assert "rank 1: rank 1 of 2 failed: boom on one rank" in done.stdout


def _csv(path: Path) -> list[dict[str, str]]:
    import csv

    with path.open(encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _same_table(a: list[dict[str, str]], b: list[dict[str, str]], exact: tuple[str, ...]) -> None:
    assert len(a) == len(b) and [list(r) for r in a] == [list(r) for r in b]
    for ra, rb in zip(a, b):
        for key, va in ra.items():
            vb = rb[key]
            if key in exact:
                assert va == vb, (key, ra, rb)
                continue
            try:
                fa, fb = float(va), float(vb)
            except ValueError:
                assert va == vb, (key, va, vb)
                continue
            assert (fa != fa and fb != fb) or abs(fa - fb) <= 1e-4 * max(abs(fa), abs(fb), 1e-12), (key, va, vb)


def test_sweeps_under_torchrun_equal_one_process(runs, tmp_path):
    """lss (with forcing and a control) and eval split their rows over 2 ranks; rank 0 writes what one process
    writes: shares, counts, ties and the chosen factor identical."""
    import shutil

    root, _ = runs
    fixtures = Path(__file__).parent / "fixtures" / "evals" / "xwinograd"
    lss = ["--max-facts", "3", "--factors", "p_max,zero,control:p_max", "--seeds", "2", "--forcing",
           "--forcing-tokens", "4", "--quiet"]
    ev = ["--task", "xwinograd", "--data", str(fixtures), "--factor", "p_max", "--eval-langs", "fr",
          "--targets", "fr,ru", "--quiet", "--batch-size", "2"]
    for name in ("single", "multi"):
        shutil.copytree(root / "one", tmp_path / name, ignore=shutil.ignore_patterns("partial"))
    assert main(["lss", str(tmp_path / "single"), *lss]) == 0
    assert main(["eval", str(tmp_path / "single"), *ev]) == 0
    for args in (["lss", str(tmp_path / "multi"), *lss], ["eval", str(tmp_path / "multi"), *ev]):
        done = _torchrun(tmp_path, "-m", "lens_steer.cli", *args)
        assert done.returncode == 0, done.stderr[-3000:]
    single, multi = tmp_path / "single", tmp_path / "multi"
    _same_table(_csv(single / "lss.csv"), _csv(multi / "lss.csv"), exact=("lss", "n_facts", "n_ties", "note"))
    _same_table(_csv(single / "forcing.csv"), _csv(multi / "forcing.csv"), exact=("n", "empty", "undetected"))
    _same_table(_csv(single / "eval_xwinograd.csv"), _csv(multi / "eval_xwinograd.csv"), exact=("n",))
    one, two = (json.loads((d / "lss_summary.json").read_text()) for d in (single, multi))
    assert one["best_factor"] == two["best_factor"]
    assert one["world_size"] == 1 and two["world_size"] == 2 and len(two["rows_per_rank"]) == 2
    assert sum(two["rows_per_rank"]) == len(_csv(multi / "lss.csv")) == one["rows_per_rank"][0]
    assert min(two["rows_per_rank"]) > 0
    n_gen = len((single / "generations.jsonl").read_text().splitlines())
    assert n_gen == len((multi / "generations.jsonl").read_text().splitlines())  # rank 0 alone appends


@pytest.mark.udhr  # the perplexity ratios read the embedded UDHR (the subprocesses cannot be monkeypatched)
def test_compare_under_torchrun_equals_one_process(runs, tmp_path):
    """compare deals its LSS rows, generations and perplexity batches to 2 ranks; rank 0 writes the table one
    process writes (the held-out choices included), apart from the seconds."""
    import shutil

    root, _ = runs
    args = ["--methods", "p_max,diffmean*best,resid:best,prompt:en", "--langs", "en,fr,ru", "--max-facts", "2",
            "--held-out-facts", "2", "--forcing-tokens", "3", "--quiet"]
    for name in ("single", "multi"):
        shutil.copytree(root / "one", tmp_path / name, ignore=shutil.ignore_patterns("partial"))
    assert main(["compare", str(tmp_path / "single"), *args]) == 0
    done = _torchrun(tmp_path, "-m", "lens_steer.cli", "compare", str(tmp_path / "multi"), *args)
    assert done.returncode == 0, done.stderr[-3000:]
    one, two = ([{k: v for k, v in r.items() if k != "seconds"} for r in _csv(tmp_path / d / "compare.csv")]
                for d in ("single", "multi"))
    _same_table(one, two, exact=("method", "factor", "alpha", "layer", "chosen", "n_pairs", "note"))
    s1, s2 = (json.loads((tmp_path / d / "compare_summary.json").read_text()) for d in ("single", "multi"))
    assert s1["world_size"] == 1 and s2["world_size"] == 2
    assert [m["factor"] for m in s1["methods"].values()] == [m["factor"] for m in s2["methods"].values()]


def test_bad_shard_and_merge_input_are_one_line_and_write_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["identify", "--out", str(out), "--shard", "2/2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--shard" in err[0] and not out.exists(), err
    assert main(["merge", str(tmp_path / "missing0"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lens-steer: error:") and not out.exists(), err
