"""The GPU tests of the given test files (pytest -m gpu), spread over several pytest processes at once.

Most of their time is Triton compiling one specialisation after another on one core; shards compile in
parallel (the GPU machine has 16 cores), and each shard's tests share one GPU. Exit status 0 when every shard
passed; a shard still running at --timeout is killed and reported (the tests it had not finished count as not
run).

    python benchmarks/gpu_tests.py --shards 8 --timeout 150 tests/test_info_nce.py tests/test_latent.py
"""
import argparse
import os
import re
import subprocess
import sys
import time

PYTEST = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-m", "gpu"]


def collect(files):
    done = subprocess.run(PYTEST + ["--collect-only", "-q", "--continue-on-collection-errors", *files],
                          capture_output=True, text=True)
    lines = done.stdout.splitlines()
    ids = [line.strip() for line in lines if "::" in line and not line.startswith((" ", "ERROR"))]
    errors = [line for line in lines if line.startswith("ERROR")]
    if done.returncode not in (0, 5) and not errors or not ids:  # nothing collected is a failure too
        errors.append(f"pytest --collect-only exited {done.returncode} with {len(ids)} tests:\n"
                      + "\n".join((lines + done.stderr.splitlines())[-20:]))
    return ids, errors


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="+")
    p.add_argument("--shards", type=int, default=8)
    p.add_argument("--timeout", type=float, default=150, help="seconds for all shards together")
    args = p.parse_args()
    start = time.monotonic()
    ids, errors = collect(args.files)
    for line in errors:
        print(f"collection {line} (a missing module? that file's GPU tests are not run)")
    print(f"{len(ids)} GPU tests in {', '.join(args.files)}; {min(args.shards, len(ids))} shards", flush=True)
    shards = [ids[i::args.shards] for i in range(min(args.shards, len(ids)))]
    procs = [subprocess.Popen(PYTEST + ["-q", "-rfE", *shard], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for shard in shards]
    failed = bool(errors)
    for i, proc in enumerate(procs):
        try:
            out, _ = proc.communicate(timeout=max(1.0, args.timeout - (time.monotonic() - start)))
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
            print(f"shard {i}: TIMED OUT after {args.timeout:.0f} s ({len(shards[i])} tests; output so far below)")
            failed = True
        lines = out.strip().splitlines()
        summary = lines[-1] if lines else "(no output)"
        print(f"shard {i}: {summary}")
        failures = [line for line in lines if re.match(r"(FAILED|ERROR) ", line)]
        for line in failures:
            print(f"  {line}")
        if proc.returncode != 0 and not failures:
            print("\n".join("  " + line for line in lines[-30:]))
        failed |= proc.returncode not in (0, 5)  # 5: no tests collected
    print(f"GPU tests: {'FAILED' if failed else 'passed'} in {time.monotonic() - start:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
