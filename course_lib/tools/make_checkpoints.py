"""Train the small models that lessons load (the recipes of ``tools/recipes.py``) into ``data/checkpoints/``.

    python -m course_lib.tools.make_checkpoints                 # every recipe whose file is missing
    python -m course_lib.tools.make_checkpoints --only vq-f4-photos --force
    python -m course_lib.tools.make_checkpoints --list
    python -m course_lib.tools.make_checkpoints --jobs 2       # two recipes at a time, one thread each

Each recipe trains in under 20 minutes on one core of a 2-core laptop, except ``var-shapes`` (about 45: VAR
reads 130 positions per image where the GPT and MaskGIT beside it read 64, for the same steps); on these
small models one torch thread is as fast as two, so ``--jobs 2`` halves the total. Runs write their resumable state to
``data/runs/`` (git-ignored), so an interrupted ``make checkpoints`` continues where it stopped; the
shipped file keeps only weights + metadata (preset, overrides, data, steps, seed, test metrics on
the held-out split, training time, code version) and stays under 5 MB.
"""
from __future__ import annotations

import argparse
import itertools
import os
import platform
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see course_lib/tools/train.py; must precede `import torch`

import torch  # noqa: E402

from course_lib.engine.checkpoints import CheckpointError, export_weights, read_metadata, update_metadata  # noqa: E402
from course_lib.engine.commands import USAGE, one_line  # noqa: E402
from course_lib.engine.training import TrainingDiverged
from course_lib.paths import CHECKPOINT_DIR, RUN_DIR
from course_lib.tools.recipes import BUILDERS, RECIPES, build_order, depth

MAX_BYTES = 5 * 2**20


def make(name: str, force: bool = False, progress: bool = True) -> dict:
    """Train recipe ``name`` (resuming its run if one was interrupted) and ship its checkpoint."""
    recipe, out, run = RECIPES[name], CHECKPOINT_DIR / f"{name}.pt", RUN_DIR / f"{name}.pt"
    missing = [n for n in recipe.needs if not (CHECKPOINT_DIR / f"{n}.pt").is_file()]
    if missing:
        raise CheckpointError(f"{name} builds on {missing}, which are not made yet")
    if force:
        run.unlink(missing_ok=True)
    result = BUILDERS[recipe.kind](recipe, run, progress)
    # the run records its own wall and cpu seconds (summed over resumed sessions); wall time depends on
    # what else runs on the machine, cpu time (all threads) much less so
    update_metadata(run, recipe=name, needs=list(recipe.needs), machine=_machine(),
                    resumed=result.steps < recipe.train.steps)
    export_weights(run, out)
    size = out.stat().st_size
    if size > MAX_BYTES:
        raise ValueError(f"{out} is {size / 2**20:.1f} MB, over the {MAX_BYTES / 2**20:.0f} MB limit")
    return read_metadata(out)


def _machine() -> dict:
    return {"cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": str(torch.__version__)}


def summary_line(name: str) -> str:
    path = CHECKPOINT_DIR / f"{name}.pt"
    if not path.is_file():
        return f"{name:16s} (not made yet)"
    metadata, size = read_metadata(path), path.stat().st_size / 2**20
    metrics = metadata.get("test_metrics") or {}
    keys = ("psnr", "ssim", "usage", "perplexity", "accuracy", "bits_per_token", "bits_per_image")
    parts = [f"{k} {metrics[k]:.4g}" for k in keys if metrics.get(k) is not None]
    samples = (metadata.get("sample_metrics") or {}).get("samples")
    if samples:
        parts.append(f"sample class accuracy {samples['class_accuracy']:.3f}")
    times = f"{metadata.get('train_seconds', 0):5.0f} s wall, {metadata.get('cpu_seconds', 0):5.0f} s cpu"
    return f"{name:16s} {size:4.1f} MB  {times}  " + ", ".join(parts)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m course_lib.tools.make_checkpoints", description=__doc__.split("\n")[0])
    parser.add_argument("--only", action="append", default=[], metavar="NAME",
                        help=f"make only these (repeat or comma-separate): {', '.join(RECIPES)}")
    parser.add_argument("--force", action="store_true", help="retrain even when the checkpoint exists")
    parser.add_argument("--list", action="store_true", help="list the recipes and what is shipped")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="recipes trained at once, each in its own process with one thread (log: data/runs/NAME.log)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    names = [n.strip() for item in args.only for n in item.split(",") if n.strip()] or list(RECIPES)
    asked = set(names)  # --force retrains these; what they need is made only when missing
    try:
        names = build_order(names)  # what each needs comes first
    except ValueError as error:  # an unknown recipe: bad input
        print(f"error: {one_line(error)}", file=sys.stderr)
        return USAGE
    if args.threads is not None:
        torch.set_num_threads(max(1, args.threads))
    if args.list:
        print("\n".join(summary_line(n) for n in RECIPES))
        return 0
    todo = []
    for name in names:
        if (CHECKPOINT_DIR / f"{name}.pt").is_file() and not (args.force and name in asked):
            print(f"{name}: already shipped (use --force to retrain)")
        else:
            todo.append(name)
    if args.jobs > 1 and len(todo) > 1:
        return make_in_parallel(todo, args.jobs, args.force)
    for name in todo:
        print(f"{name}: training", flush=True)
        try:
            make(name, args.force)
        except (ValueError, CheckpointError, TrainingDiverged) as error:
            print(f"error: {name}: {error}", file=sys.stderr)
            return 1
        print(summary_line(name), flush=True)
    return 0


def make_in_parallel(names: list[str], jobs: int, force: bool) -> int:
    """Train ``names`` as child processes, ``jobs`` at a time, one torch thread each, one dependency depth
    after another (a recipe starts once what it needs is made); 0 if all succeed."""
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    for _, wave in itertools.groupby(sorted(names, key=depth), key=depth):
        wave = list(wave)
        with ThreadPoolExecutor(jobs) as pool:
            failed = [name for name, ok in zip(wave, pool.map(lambda n: _make_in_child(n, force), wave)) if not ok]
        if failed:
            return 1
    return 0


def _make_in_child(name: str, force: bool) -> bool:
    log = RUN_DIR / f"{name}.log"
    print(f"{name}: training (progress in {log})", flush=True)
    command = [sys.executable, "-m", "course_lib.tools.make_checkpoints", "--only", name, "--threads", "1"]
    with log.open("w") as stream:
        code = subprocess.run(command + ["--force"] * force, stdout=stream, stderr=subprocess.STDOUT).returncode
    if code:
        print(f"error: {name} failed (exit {code}); see {log}", file=sys.stderr)
    else:
        print(summary_line(name), flush=True)
    return code == 0


if __name__ == "__main__":
    sys.exit(main())
