#!/usr/bin/env python3
"""Six real Keras LSTM programs (tests/programs) timed on lstmfast and on Keras 3 (torch backend).

    python bench/keras_programs.py [--quick] [--programs a,b] [--libraries lstmfast,keras] [--seed 1]
                                   [--out DIR] [--markdown PATH]

Each program runs as written for Keras, once on lstmfast (its import lines rewritten, nothing else)
and once on Keras 3 (the Keras 2 program with the renames of harness.KERAS3_PORT), one after the
other, each in a fresh process with the user's environment (no thread settings are added: both
libraries run with their defaults). The programs time themselves around model.fit (FIT_SECONDS), so
imports, data loading and text generation are not counted. SIZES are chosen so that a Keras 3 run
trains for roughly 20-60 s on a 2-core machine; ``--quick`` uses tiny sizes, to check that the
bench works. Prints a markdown table: training seconds per program, Keras/lstmfast, and the
parameter counts and first-epoch losses of both.

Data: as in tests/test_keras_programs.py (see tests/programs/harness.py), from ../shared/data: the
text programs download tiny-shakespeare with get_file from a file:// URL, the IMDB programs read the
reviews (Keras through an imdb.npz rebuilt from them in its cache, under --out).
"""
import argparse
import datetime
import importlib.util
import os
import platform
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
_spec = importlib.util.spec_from_file_location("keras_programs_harness", REPO / "tests" / "programs" / "harness.py")
harness = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(harness)

# About 20-60 s of Keras 3 training each on a 2-core VM; the programs' own defaults are the tutorials'
# full sizes (hours on Keras for some).
SIZES = {
    "addition_rnn": dict(PROGRAM_TRAINING_SIZE=50000, PROGRAM_EPOCHS=3),          # 2 iterations of 45,000
    "bidirectional_lstm_imdb": dict(PROGRAM_TRAIN_SAMPLES=2500, PROGRAM_VAL_SAMPLES=1000, PROGRAM_MAXLEN=200,
                                    PROGRAM_EPOCHS=1),
    "lstm_character_level_text_generation": dict(PROGRAM_CORPUS_CHARS=100000, PROGRAM_EPOCHS=1,
                                                 PROGRAM_GENERATE_CHARS=100),
    "echo_sequence": dict(PROGRAM_UPDATES=10000),                                  # the tutorial's size
    "imdb_lstm_classic": dict(PROGRAM_TRAIN_SAMPLES=3000, PROGRAM_TEST_SAMPLES=1000, PROGRAM_MAXLEN=500,
                              PROGRAM_EPOCHS=1),
    "macbeth_text_generation": dict(PROGRAM_CORPUS_CHARS=8000, PROGRAM_SEQ_LENGTH=100, PROGRAM_EPOCHS=1,
                                    PROGRAM_GENERATE_CHARS=100),
}
QUICK = {
    "addition_rnn": dict(PROGRAM_TRAINING_SIZE=500, PROGRAM_EPOCHS=2),
    "bidirectional_lstm_imdb": dict(PROGRAM_TRAIN_SAMPLES=100, PROGRAM_VAL_SAMPLES=50, PROGRAM_MAXLEN=20,
                                    PROGRAM_EPOCHS=1),
    "lstm_character_level_text_generation": dict(PROGRAM_CORPUS_CHARS=2000, PROGRAM_EPOCHS=1,
                                                 PROGRAM_GENERATE_CHARS=5),
    "echo_sequence": dict(PROGRAM_UPDATES=100),
    "imdb_lstm_classic": dict(PROGRAM_TRAIN_SAMPLES=100, PROGRAM_TEST_SAMPLES=50, PROGRAM_MAXLEN=20,
                              PROGRAM_EPOCHS=1),
    "macbeth_text_generation": dict(PROGRAM_CORPUS_CHARS=500, PROGRAM_SEQ_LENGTH=10, PROGRAM_EPOCHS=1,
                                    PROGRAM_GENERATE_CHARS=5),
}
LIBRARIES = ("lstmfast", "keras")


def _sizes_text(sizes: dict) -> str:
    return ", ".join(f"{k[len('PROGRAM_'):].lower()}={v}" for k, v in sizes.items())


def _cell(result, key, fmt):
    return "—" if result is None or key not in result else format(result[key], fmt)


def markdown(rows, sizes, args) -> str:
    env = ", ".join(f"{k}={os.environ[k]}" for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "OPENBLAS_NUM_THREADS",
                                                    "MKL_NUM_THREADS") if k in os.environ) or "none set"
    cpu = next((row.split(":", 1)[1].strip() for row in open("/proc/cpuinfo") if row.startswith("model name")),
               None) if os.path.exists("/proc/cpuinfo") else None
    lines = [
        "## Keras programs on lstmfast and Keras 3 (torch backend) — `bench/keras_programs.py`"
        + (" (--quick)" if args.quick else ""),
        "",
        f"- date: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}",
        f"- machine: {cpu or platform.machine()}, nproc {os.cpu_count()}; thread variables: {env}; seed {args.seed}",
        "- seconds: wall time inside model.fit as each program measures it (validation included, imports, "
        "data preparation and generation not)",
        "",
        "| program | sizes | lstmfast fit (s) | Keras 3 fit (s) | Keras/lstmfast | params (lstmfast / Keras) "
        "| first-epoch loss (lstmfast / Keras) |",
        "|---|---|---:|---:|---:|---|---|",
    ]
    for name, results in rows:
        ours, theirs = results.get("lstmfast"), results.get("keras")
        ratio = f"{theirs['FIT_SECONDS'] / ours['FIT_SECONDS']:.1f}x" if ours and theirs else "—"
        lines.append(f"| {name} | {_sizes_text(sizes[name])} | {_cell(ours, 'FIT_SECONDS', '.2f')} | "
                     f"{_cell(theirs, 'FIT_SECONDS', '.2f')} | {ratio} | {_cell(ours, 'PARAMS', ',.0f')} / "
                     f"{_cell(theirs, 'PARAMS', ',.0f')} | {_cell(ours, 'LOSS0', '.4f')} / "
                     f"{_cell(theirs, 'LOSS0', '.4f')} |")
    notes = [f"- {name} on {lib}: {why}" for name, results in rows for lib, why in results.get("notes", {}).items()]
    return "\n".join(lines + ([""] + notes if notes else []))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: check that the bench runs")
    parser.add_argument("--programs", default=",".join(SIZES), help="comma-separated (default: all six)")
    parser.add_argument("--libraries", default=",".join(LIBRARIES), help="lstmfast,keras (default both)")
    parser.add_argument("--seed", type=int, default=1, help="PROGRAM_SEED for every run (default 1)")
    parser.add_argument("--out", type=Path, default=HERE / "out" / "keras_programs",
                        help="caches and the programs' working folders")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per run (default 1800)")
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    args = parser.parse_args()
    programs = [p for p in args.programs.split(",") if p]
    libraries = [lib for lib in args.libraries.split(",") if lib]
    unknown = [p for p in programs if p not in SIZES] + [lib for lib in libraries if lib not in LIBRARIES]
    if unknown:
        parser.error(f"unknown program or library: {', '.join(unknown)} (programs: {', '.join(SIZES)}; "
                     f"libraries: {', '.join(LIBRARIES)})")
    if args.markdown:
        from lstmfast._atomic import check_writable, write_text
        check_writable(args.markdown, "--markdown")  # now, not after the runs
    if "keras" in libraries and not all(importlib.util.find_spec(m) for m in ("keras", "torch")):
        print("keras or torch is not installed: running lstmfast only (pip install keras torch)", file=sys.stderr)
        libraries = [lib for lib in libraries if lib != "keras"]
    sizes = QUICK if args.quick else SIZES
    homes = harness.prepare_homes(args.out / "homes")
    rows = []
    for name in programs:
        results = {"notes": {}}
        missing = harness.missing_data(name)
        if missing:
            results["notes"]["all"] = f"skipped: shared data not present ({', '.join(missing)})"
            rows.append((name, results))
            continue
        for library in libraries:
            if library == "keras" and "imdb_reviews.jsonl.gz" in harness.NEEDS[name]:
                harness.build_keras_imdb(homes)
            print(f"{name} on {library} ({_sizes_text(sizes[name])}) ...", file=sys.stderr, flush=True)
            work = args.out / "runs" / f"{name}-{library}"
            for old in work.glob("weights-improvement-*"):     # the Macbeth program loads its newest checkpoint
                old.unlink()
            try:
                proc, values = harness.run_program(name, library, sizes[name], homes, work, args.seed, args.timeout)
            except subprocess.TimeoutExpired:  # recorded, so one slow run does not lose the others
                results["notes"][library] = f"timed out: fit did not finish within --timeout {args.timeout:g} s"
                print(f"  timed out after {args.timeout:g} s", file=sys.stderr, flush=True)
                continue
            (work / "stdout.txt").write_text(proc.stdout)
            (work / "stderr.txt").write_text(proc.stderr)
            if proc.returncode != 0 or "FIT_SECONDS" not in values:
                tail = proc.stderr.strip().splitlines()[-1:] or ["(no error output)"]
                results["notes"][library] = f"failed (exit {proc.returncode}): {tail[0]}; see {work}/stderr.txt"
                print(proc.stderr[-3000:], file=sys.stderr)
                continue
            results[library] = values
            print(f"  fit {values['FIT_SECONDS']:.2f} s, loss0 {values['LOSS0']:.4f}", file=sys.stderr, flush=True)
        rows.append((name, results))
    text = markdown(rows, sizes, args)
    print(text)
    if args.markdown:
        write_text(args.markdown, text + "\n")
    failed = any(lib in r["notes"] for _, r in rows for lib in libraries)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
