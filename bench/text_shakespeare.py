#!/usr/bin/env python3
"""The char-level quality bar: train on tiny-shakespeare for 15 minutes, then generate a sample.

    python bench/text_shakespeare.py [--minutes 15] [--data PATH] [--markdown PATH] [-- extra train options]

Runs ``lstmfast text train DATA --minutes M ...`` with CONFIG below, then ``lstmfast text generate``
from the best model, each in a fresh process, and prints a markdown section for bench/RESULTS.md:
the settings, the best validation loss (nats/char; target <= 1.45) and perplexity, the validation
curve and the sample. Outputs (model, metrics JSON, logs) go to bench/out/text/.

Why CONFIG (a 2-core CPU, 15 minutes; target <= 1.45 nats/char): a training step costs about
3 x 2*4H*(X+H) flops per character and layer, so 2 x 512 units (one-hot input, X = 65 then 512) is
~20 Mflop/char: on the 2-core Zen 5 of 2026-12-06 (AVX-512) ~17.8k chars/s, ~15 passes over the
1.0M training characters. 2 x 256 runs ~3.4x as fast but reached only 1.486-1.489 before it
overfit (the issue-4 runs); 2 x 512 overfits within the budget (train 1.19 vs validation 1.447 and flat from
epoch 11 with dropout 0.3 alone), so it is regularised twice: dropout 0.35 after each LSTM and
decoupled weight decay 0.1 (AdamW), with Adam at 2e-3 decayed by a cosine to 2e-4 over the budget
(4e-3 diverged at 512 units in a short run), 50-step chunks of 64 streams (314 updates per
epoch), and the best checkpoint by validation loss. Results and the runs tried: bench/RESULTS.md.
"""
import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DATA = REPO.parent / "shared" / "data" / "tinyshakespeare.txt"
TARGET = 1.45  # nats/char on the held-out 10%

CONFIG = ["--layers", "2", "--units", "512", "--dropout", "0.35", "--weight-decay", "0.1", "--seq-len", "50",
          "--batch-size", "64", "--lr", "0.002", "--lr-schedule", "cosine", "--clipnorm", "5", "--seed", "1"]
SAMPLE = ["--length", "600", "--prime", "ROMEO:\n", "--temperature", "0.8", "--seed", "1"]


def lstmfast_cmd(args):
    return [sys.executable, "-m", "lstmfast", *args]


def run(cmd, log: Path, env) -> None:
    print("$ " + " ".join(shlex.quote(c) for c in cmd[2:]), file=sys.stderr)
    with open(log, "w") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    if proc.returncode != 0:
        raise SystemExit(f"failed (exit {proc.returncode}), see {log}:\n{log.read_text()[-3000:]}")


def markdown(train: dict, gen: dict, train_cmd, minutes: float, info: dict) -> str:
    met = train["val_loss"] <= TARGET
    cfg = train["config"]
    V = train["vocab_size"]
    source = f"Embedding({V}, {cfg['embedding']})" if cfg["embedding"] else f"one-hot({V})"
    lines = [
        f"## Char-level text generation: tiny-shakespeare in {minutes:g} minutes — `bench/text_shakespeare.py`",
        "",
        f"- date: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}",
        f"- machine: {info['machine']}, nproc {os.cpu_count()}; lstmfast.build_info(): {info['build']}",
        f"- environment: {info['env']}",
        f"- command: `lstmfast {' '.join(shlex.quote(str(c)) for c in train_cmd[3:])}`",
        f"- model: {source} -> {cfg['layers']} x LSTM({cfg['units']}, stateful) with "
        f"Dropout({cfg['dropout']}) -> Dense({train['vocab_size']}, softmax); {train['parameters']:,} parameters",
        f"- data: {train['train_chars']:,} training characters, the last {train['val_chars']:,} (10%) held out; "
        f"batches of {cfg['batch_size']} contiguous streams x {cfg['seq_len']} steps, state carried across batches",
        "",
        f"**Best validation loss {train['val_loss']:.4f} nats/char (perplexity {train['val_perplexity']:.3f}) "
        f"at epoch {train['best_epoch']:g}: target <= {TARGET:.2f} {'met' if met else 'NOT met'}.** "
        f"{train['epochs']:g} epochs in {train['seconds']:.0f} s, {train['chars_per_second']:,.0f} training "
        f"chars/s; last epoch's training loss {train['train_loss']:.4f} (with dropout).",
        "",
        "| epoch | val loss (nats/char) | val perplexity | train loss | learning rate | time (s) |",
        "|---|---|---|---|---|---|",
    ]
    for h in train["history"]:
        lines.append(f"| {h['epoch']:g} | {h['val_loss']:.4f} | {h['val_perplexity']:.3f} | {h['train_loss']:.4f} | "
                     f"{h['lr']:.2e} | {h['seconds']:.0f} |")
    lines += ["", f"Sample ({gen['length']} characters, {gen['method']}, temperature {gen.get('temperature')}, "
                  f"primed with {gen['prime']!r}; {gen['chars_per_second']:,.0f} chars/s):", "", "```",
              gen["prime"] + gen["text"], "```", ""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=15.0, help="training budget (default 15)")
    parser.add_argument("--data", type=Path, default=DATA, help=f"text file (default {DATA})")
    parser.add_argument("--out", type=Path, default=HERE / "out" / "text", help="output folder")
    parser.add_argument("--markdown", type=Path, help="also write the markdown section here")
    parser.add_argument("extra", nargs="*", help="more 'text train' options after --, e.g. -- --units 384")
    args = parser.parse_args()
    if args.markdown:
        from lstmfast._atomic import check_writable, write_text
        check_writable(args.markdown, "--markdown")  # now, not after the runs
    if not args.data.exists():
        raise SystemExit(f"{args.data} not found (tiny-shakespeare, 1,115,394 characters)")
    args.out.mkdir(parents=True, exist_ok=True)
    model, train_json, gen_json = args.out / "shakespeare.lstmfast", args.out / "train.json", args.out / "gen.json"
    env = dict(os.environ)  # the user's defaults: lstmfast keeps a step on one thread pool itself
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO / "python"), env.get("PYTHONPATH")) if p)
    train_cmd = lstmfast_cmd(["text", "train", str(args.data), "--save", str(model), "--minutes", f"{args.minutes:g}",
                              *CONFIG, *args.extra, "--metrics-json", str(train_json)])
    run(train_cmd, args.out / "train.log", env)
    run(lstmfast_cmd(["text", "generate", str(model), *SAMPLE, "--quiet", "--metrics-json", str(gen_json)]),
        args.out / "gen.log", env)
    info = json.loads(subprocess.run([sys.executable, "-c", "import json, platform, lstmfast; print(json.dumps("
                                      "{'build': lstmfast.build_info(), 'machine': platform.processor() or "
                                      "platform.machine()}))"], capture_output=True, text=True, env=env,
                                     check=True).stdout)
    cpu = next((row.split(":", 1)[1].strip() for row in open("/proc/cpuinfo") if row.startswith("model name")),
               None) \
        if os.path.exists("/proc/cpuinfo") else None
    info["machine"] = f"{cpu or info['machine']}, {platform.system()} {platform.release()}"
    info["env"] = ", ".join(f"{k}={env[k]}" for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "OPENBLAS_NUM_THREADS")
                            if k in env) or "the library's defaults (none of OMP_NUM_THREADS, OMP_WAIT_POLICY, " \
                                            "OPENBLAS_NUM_THREADS set)"
    text = markdown(json.loads(train_json.read_text()), json.loads(gen_json.read_text()), train_cmd,
                    args.minutes, info)
    print(text)
    if args.markdown:
        write_text(args.markdown, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
