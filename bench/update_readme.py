"""Regenerate README.md's results block from finished runs (never edit it by hand).

Reads the stages' `record.json` of the toy run (`make demo`, in the repository), of the
lego CPU-profile run (`python bench/lego_cpu.py`, in bench_runs/) and of the capture
CPU-profile runs (`python bench/capture.py`, in bench_runs/capture/ or each --capture-workspace),
plus each workspace's `viewer.json` from `python bench/viewer.py` if present; copies the pictures
into bench/results/ (the toy turntable GIF, a side-by-side test view of lego and of each capture)
and rewrites the text between `<!-- results:begin -->` and `<!-- results:end -->` in README.md.
A profile with no finished run here keeps its section as it was (figures measured elsewhere stay,
with the machine and date they name).

    python bench/update_readme.py [--toy-workspace .] [--lego-workspace bench_runs]
                                  [--capture-workspace bench_runs/capture ...]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from pipeline.machine import short

ROOT = Path(__file__).resolve().parent.parent
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"
STAGES = ("data", "teacher", "distill", "student", "export", "report")


def records(ws: Path, name: str) -> dict[str, dict]:
    out = {}
    for s in STAGES:
        path = ws / "runs" / name / s / "record.json"
        if path.exists():
            out[s] = json.loads(path.read_text())
    return out


def stage_rows(recs: dict[str, dict]) -> list[str]:
    rows = ["| stage | seconds | result |", "|---|---|---|"]
    for s, rec in recs.items():
        m = rec.get("metrics") or {}
        if s == "teacher":
            note = f"{m.get('steps')} steps; test PSNR {m['psnr']:.2f} dB, SSIM {m['ssim']:.3f} ({m['n_views']} views)"
        elif s == "distill":
            vps = m.get("views_per_s")
            w, h = m["size"] if isinstance(m["size"], list) else (m["size"], m["size"])
            note = f"{m['n_views']} pseudo-views at {w}x{h}" + (f", {vps:.2f} views/s" if vps else "")
        elif s == "student":
            note = (f"PSNR {m['psnr']:.2f} dB vs ground truth (teacher on the same views {m['teacher_psnr']:.2f} dB), "
                    f"{m['psnr_vs_teacher']:.2f} dB vs teacher; SSIM {m['ssim']:.3f}")
        elif s == "export":
            note = (f"{m['onnx_bytes'] / 1e6:.2f} MB ONNX, {m['params']:,} parameters, "
                    f"{m['flops_per_frame'] / 1e9:.3f} GFLOP/frame, {m['ort_python_ms_1thread']:.1f} ms/frame in "
                    "onnxruntime-python (1 thread)")
            if "fp16_bytes" in m:
                note += f"; fp16 weights {m['fp16_bytes'] / 1e6:.2f} MB ({m['fp16_psnr_vs_fp32']:.1f} dB vs fp32)"
        elif s == "report":
            note = f"turntables ({m.get('turntable_frames')} frames), {m.get('n_views')} test views for compare.html"
        else:
            note = ""
        rows.append(f"| {s} | {rec['seconds']:.1f} | {note} |")
    total = sum(r["seconds"] for r in recs.values())
    rows.append(f"| **total** | **{total:.0f}** | |")
    return rows


def machine_of(recs: dict[str, dict]) -> str:
    """The machine the records name (pipeline/machine.py), with the speed switches `auto` chose there."""
    blocks = {json.dumps(r["machine"], sort_keys=True) for r in recs.values() if "machine" in r}
    if not blocks:
        return "an unrecorded machine (records from before the machine block)"
    text = " / ".join(short(json.loads(b)) for b in sorted(blocks))
    resolved = {k: v for r in recs.values() for k, v in (r.get("resolved") or {}).items()}
    if resolved:
        text += " (" + ", ".join(f"`{k}: {str(v).lower()}`" for k, v in sorted(resolved.items())) + ")"
    days = sorted({str(r["finished"])[:10] for r in recs.values() if r.get("finished")})
    if days:  # when the stages finished (the measurement's date; records keep no commit)
        text += ", " + (days[0] if len(days) == 1 else f"{days[0]} to {days[-1]}")
    return text


# whose photos a capture's picture shows (a derived picture keeps its source's credit and licence)
CREDITS = {"cape": "photos of the Mold Gold Cape by Daniel Pett and Tom Flynn, (c) the Trustees of the British "
                   "Museum, CC BY-NC-SA 4.0, from github.com/vork/moldGoldCape (not in this repository); this "
                   "picture is under the same licence"}


def profile_block(ws: Path, name: str, picture: str, title: str, results: Path, credit: str = "") -> list[str]:
    """README lines for one profile's run `name` in workspace `ws`: its machine, a side-by-side test
    view (copied to bench/results/<picture>_side_by_side.png), the stage table and the browser's speed."""
    recs = records(ws, name)
    if "student" not in recs:
        return []
    lines = [f"{title}, on {machine_of(recs)}:", ""]
    side = sorted((ws / "runs" / name / "student" / "side_by_side").glob("*.png"))
    if side:
        shutil.copy(side[0], results / f"{picture}_side_by_side.png")
        lines += [f"![{name}: ground truth | teacher | student](bench/results/{picture}_side_by_side.png)", "",
                  f"*ground truth | teacher | student, test view {side[0].stem}" + (f"; {credit}" if credit else "")
                  + "*", ""]
    lines += stage_rows(recs) + [""]
    viewer = ws / "viewer.json"
    s = json.loads(viewer.read_text()) if viewer.exists() else {}
    v = s.get("scenes", {}).get(name)
    if v:
        where = short(s["machine"]) if "machine" in s else "2 cores"
        lines += [f"In the browser (`python bench/viewer.py`, headless Chromium, {where}): {name} renders at "
                  f"**{v['fps_wasm2']:.1f} fps** on WASM with 2 threads ({v['wasm2_page_ms']:.1f} ms a frame, "
                  f"{v['wasm1_page_ms']:.1f} ms on 1 thread; onnxruntime-python {v['ort2_ms']:.1f} ms on 2 "
                  f"threads); the page's frame time is {v['page_overhead_ratio']:.2f}x the bare session.run.", ""]
    return lines


def section_key(line: str) -> str | None:
    """Which profile's section a results line opens (the titles written below), else None."""
    if line.startswith("Toy scene (`make demo`)"):
        return "toy"
    if line.startswith("Lego at "):
        return "lego"
    if line.startswith("The capture `"):
        return "capture:" + line.split("`")[1]
    return None


def sections(lines: list[str]) -> dict[str, list[str]]:
    """A results block's lines by profile (`section_key`), in order; lines before the first title
    are dropped."""
    out: dict[str, list[str]] = {}
    key = None
    for line in lines:
        key = section_key(line) or key
        if key is not None:
            out.setdefault(key, []).append(line)
    return out


def merged(old: list[str], new: dict[str, list[str]]) -> list[str]:
    """The results block: each profile's new section, else its old one; toy, lego, then the
    captures by name. Each section ends in one blank line."""
    both = {**sections(old), **new}
    order = [k for k in ("toy", "lego") if k in both] + sorted(k for k in both if k.startswith("capture:"))
    lines = []
    for key in order:
        body = list(both[key])
        while body and not body[-1].strip():
            body.pop()
        lines += body + [""]
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--toy-workspace", default=str(ROOT))
    ap.add_argument("--lego-workspace", default=str(ROOT / "bench_runs"))
    ap.add_argument("--capture-workspace", action="append", default=None,
                    help="a bench/capture.py workspace (repeatable; default bench_runs/capture)")
    args = ap.parse_args()
    toy_ws, lego_ws = Path(args.toy_workspace), Path(args.lego_workspace)
    results = ROOT / "bench" / "results"
    results.mkdir(exist_ok=True)
    new: dict[str, list[str]] = {}

    toy = records(toy_ws, "toy")
    if toy:
        gif = toy_ws / "site" / "scenes" / "toy" / "report" / "turntable_student.gif"
        lines = ["Toy scene (`make demo`), from the stages' `record.json`, on " + machine_of(toy) + ":", ""]
        if gif.exists():
            shutil.copy(gif, results / "toy_turntable.gif")
            lines += ["![toy student turntable](bench/results/toy_turntable.gif)", ""]
        new["toy"] = lines + stage_rows(toy)
    lego = profile_block(lego_ws, "lego", "lego", "Lego at 200x200, CPU profile (`python bench/lego_cpu.py`, "
                         "`configs/lego.yaml`)", results)
    if lego:
        new["lego"] = lego
    for cap_ws in map(Path, args.capture_workspace or [ROOT / "bench_runs" / "capture"]):
        for name in sorted(p.name for p in (cap_ws / "runs").glob("*") if (p / "student" / "record.json").exists()):
            if name.startswith("ablation_"):  # bench/student_ablation.py's candidates, not a profile run
                continue
            # bench/capture.py --no-masks names its run after the capture + "-unmasked"
            unmasked = name.endswith("-unmasked")
            new[f"capture:{name}"] = profile_block(
                cap_ws, name, f"capture_{name}", f"The capture `{name}`, capture CPU profile (`python "
                f"bench/capture.py --scene PATH{' --no-masks' if unmasked else ''}`, `configs/capture.yaml`, "
                "nothing else set)", results, CREDITS.get(name.removesuffix("-unmasked"), ""))
    if not new:
        print("error: no finished toy, lego or capture run found (make demo; python bench/lego_cpu.py; "
              "python bench/capture.py)", file=sys.stderr)
        return 2

    readme = ROOT / "README.md"
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        print(f"error: {readme} has no {BEGIN} ... {END} block", file=sys.stderr)
        return 2
    head, rest = text.split(BEGIN, 1)
    old, tail = rest.split(END, 1)
    lines = merged(old.strip("\n").splitlines(), new)
    readme.write_text(head + BEGIN + "\n" + "\n".join(lines) + END + tail)
    kept = sorted(set(sections(old.splitlines())) - set(new))
    print(f"updated {readme}: {', '.join(sorted(new))} regenerated" + (f"; kept {', '.join(kept)} as they were"
                                                                          if kept else "") + f"; pictures in {results}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
