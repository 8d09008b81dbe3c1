#!/usr/bin/env python3
"""Issue 17's targets against one bench/run.sh run: reads the results it wrote and appends a table to latest.md.

  python3 bench/targets.py [--quick]

Reads bench/results/latest.md (quick.md), density-latest.md (density-quick.md) and churn-latest.md (churn-quick.md),
all written by the same bench/run.sh, and appends "Targets" to latest.md (quick.md): each target, the run's figure,
met or not and by how much. Prints the table too. A figure a result file does not have is shown as "not measured".
"""
import os
import re
import sys

QUICK = "--quick" in sys.argv
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
SUFFIX = "quick" if QUICK else "latest"
MAIN = os.path.join(RESULTS, "quick.md" if QUICK else "latest.md")


def read(name):
    try:
        with open(os.path.join(RESULTS, name)) as f:
            return f.read()
    except OSError:
        return ""


def table_rows(text, header_cell):
    """The rows (lists of cells) of every markdown table whose header has a cell equal to header_cell, by first cell."""
    rows, header = {}, None
    for line in text.splitlines():
        if not line.startswith("|"):
            header = None
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if header is None:
            header = cells
            continue
        if set(cells) <= {"---"} or header_cell not in header:
            continue
        rows[cells[0]] = dict(zip(header, cells))
    return rows


def ratio(cell):
    match = re.match(r"\**([\d.]+)×?\**", cell or "")
    return float(match.group(1)) if match else None


def main():
    latest, density, churn = read(os.path.basename(MAIN)), read(f"density-{SUFFIX}.md"), read(f"churn-{SUFFIX}.md")
    targets = []  # (target, figure, met)

    def add(target, figure, met):
        targets.append((target, figure if figure is not None else "not measured", "—" if met is None else ("met" if met else "not met")))

    match = re.search(r"\*\*relay RSS per idle session\*\* \| \*\*([\d.]+) KiB\*\*", density)
    per_session = float(match.group(1)) if match else None
    add("relay RSS per idle agent session ≤ 48 KiB (10,000 sessions)",
        None if per_session is None else f"{per_session:.1f} KiB ({per_session / 48:.2f}× the target)", None if per_session is None else per_session <= 48)
    match = re.search(r"\*\*([\d.]+) KiB per connection\*\* \(relay \+ agent\)", latest)
    per_connection = float(match.group(1)) if match else None
    match_ok = re.search(r"Idle connections through one sitelink session: (\d+) opened, (\d+) carried", latest)
    carried = f"; {match_ok.group(2)} of {match_ok.group(1)} carried data afterwards" if match_ok else ""
    add("≤ 10 KiB per idle tunnelled connection (relay + agent), all carrying data afterwards",
        None if per_connection is None else f"{per_connection:.1f} KiB{carried}",
        None if per_connection is None else per_connection <= 10 and (not match_ok or match_ok.group(1) == match_ok.group(2)))

    main_rows = table_rows(latest, "vs ssh -R")
    below = []
    for title, row in main_rows.items():
        if "sitelink" not in row or title.startswith("CPU") or "s/GiB" in row.get("unit", ""):
            continue
        value = ratio(row.get("vs ssh -R"))
        if value is None:
            continue
        add(f"≥ 1.0× ssh -R: {title}", f"{value:.2f}×", value >= 1.0)
        if value < 1.0:
            below.append(title)

    ceiling = table_rows(latest, "sitelink / bare gRPC")
    for title, row in ceiling.items():
        value = ratio(row.get("sitelink / bare gRPC"))
        add(f"≥ 0.85 of the bare-gRPC ceiling: {title}", None if value is None else f"{value:.2f}", None if value is None else value >= 0.85)

    cpu = table_rows(latest, "CPU seconds per GiB moved")
    for title, row in cpu.items():
        add(f"CPU s/GiB reported (relay + agent; ssh + sshd; haproxy): {title}",
            f"sitelink {row.get('sitelink', '?')}, ssh -R {row.get('ssh -R', '?')}, haproxy 2-hop {row.get('haproxy 2-hop', '?')}", None)

    for who in ["relay", "agent"]:
        match = re.search(rf"\*\*{who} RSS after ([\d,]+) against after ([\d,]+)\*\* \| \*\*([\d.]+)\*\*", churn)
        add(f"churn: {who} RSS after 100,000 short connections within 10 % of after 10,000",
            None if not match else f"{match.group(3)} (after {match.group(1)} against after {match.group(2)})",
            None if not match else abs(float(match.group(3)) - 1) <= 0.10)
    match = re.search(r"\| connections \| ([\d,]+): ([\d,]+) verified, \*\*(\d+) failed\*\*", churn)
    if match:
        add("churn: every short connection verified", f"{match.group(2)} of {match.group(1)}, {match.group(3)} failed", match.group(3) == "0")

    lines = ["", "## Issue 17's targets in this run", "",
             "Assembled by bench/targets.py from this run's results (" + os.path.basename(MAIN) + f", density-{SUFFIX}.md, churn-{SUFFIX}.md).", "",
             "| target | figure | |", "|---|---|---|"]
    lines += [f"| {t} | {f} | {m} |" for t, f, m in targets]
    text = "\n".join(lines) + "\n"
    print(text)
    with open(MAIN, "a") as f:
        f.write(text)


if __name__ == "__main__":
    main()
