#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""make patches: the driver as a `git format-patch` series against Linux 7.3.

    tools/patches.py --ksrc KERNEL_SOURCE [--out DIR]
    tools/patches.py --ksrc KERNEL_SOURCE [--out DIR] --checkpatch

The second form runs scripts/checkpatch.pl --strict on every patch of DIR and
compares its messages with tools/patches/checkpatch-notes: it writes each
message with its note to DIR/checkpatch.txt and fails unless every message
has a note saying "ok" and every note still matches a message.

The split is the table tools/patches/series (its header says how to read
it). A scratch repository (DIR/git) gets, as its first commit, the 7.3
versions of the upstream files the series edits, then one commit per line
of the table; DIR/*.patch is `git format-patch` of those commits with a
cover letter (tools/patches/cover-letter.txt). Only the edited upstream files
are in the scratch repository, but the patches apply to the whole tree: their
context lines and blob IDs are those of the 7.3 files.

The output depends only on the repository's files and its HEAD commit (the
commit dates are HEAD's), so an unchanged tree gives identical patches.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TABLE = REPO / "tools/patches/series"
NOTES = REPO / "tools/patches/checkpatch-notes"
MESSAGES = REPO / "tools/patches"
# What goes upstream is chosen among these; the rest (tools/, the
# out-of-tree Makefile and Kbuild, README) is the project's own.
CANDIDATE_DIRS = ("drivers/", "include/", "Documentation/")
CANDIDATE_FILES = ("Kconfig",)
DRIVER_MAKEFILE = "drivers/media/virtio/Makefile"
MOD_LINE = re.compile(r"^\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*;")


class SeriesError(Exception):
    """A mistake in the table or in what it places; the message names it."""


@dataclass
class Patch:
    key: str
    subject: str
    exact: dict = field(default_factory=dict)  # repo path -> tree path
    globs: list = field(default_factory=list)
    mods: list = field(default_factory=list)
    hooks: list = field(default_factory=list)
    files: dict = field(default_factory=dict)  # the placement's result


def run(cmd, cwd=REPO, env=None):
    done = subprocess.run(cmd, cwd=cwd, env=env, text=True, capture_output=True)
    if done.returncode != 0:
        raise SeriesError(f"{' '.join(map(str, cmd))}: {done.stderr.strip()}")
    return done.stdout


def read_table():
    patches, out = [], None
    for number, line in enumerate(TABLE.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = [p.strip() for p in line.split("|")]
        if len(parts) != 3:
            raise SeriesError(f"{TABLE}:{number}: want KEY | SUBJECT | ITEMS")
        key, subject, items = parts
        patch = Patch(key, subject)
        for item in items.split():
            if item.startswith("mod:"):
                patch.mods.append(item[4:])
            elif item.startswith("hook:"):
                if item[5:] not in HOOKS:
                    raise SeriesError(f"{TABLE}:{number}: no hook named {item[5:]}")
                patch.hooks.append(item[5:])
            elif "*" in item:
                if "=" in item:
                    raise SeriesError(f"{TABLE}:{number}: a glob cannot be moved: {item}")
                patch.globs.append(item)
            else:
                src, _, dst = item.partition("=")
                if src in [p for q in patches for p in q.exact] or src in patch.exact:
                    raise SeriesError(f"{TABLE}:{number}: {src} is placed twice")
                patch.exact[src] = dst or src
        if key == "-":
            if patch.mods or patch.hooks:
                raise SeriesError(f"{TABLE}:{number}: the '-' line only lists files")
            out = patch
        else:
            patches.append(patch)
    if not patches:
        raise SeriesError(f"{TABLE}: no patch")
    return patches, out or Patch("-", "")


def candidates():
    """The tracked files that might go upstream (their working-tree text).

    Untracked files are left out, with a warning: a stale build output of an
    older layout must not land in the series, and a new file that should
    fails the series' build until it is added."""

    def listed(*args):
        return {
            f
            for f in run(["git", "ls-files", *args]).splitlines()
            if (f.startswith(CANDIDATE_DIRS) or f in CANDIDATE_FILES) and (REPO / f).is_file()
        }

    untracked = listed("--others", "--exclude-standard")
    if untracked:
        print(f"make patches: untracked, left out: {' '.join(sorted(untracked))}", file=sys.stderr)
    return sorted(listed("--cached"))


def place(patches, out):
    """Fills each patch's files; every candidate lands in one patch or out."""
    files = candidates()
    rows = patches + [out]
    for row in rows:
        for src in row.exact:
            if src not in files:
                raise SeriesError(f"{TABLE}: {src} ({row.key}) is not a file of the repository")
        for glob in row.globs:
            if not any(glob_match(glob, f) for f in files):
                raise SeriesError(f"{TABLE}: {glob} ({row.key}) matches no file")
    unplaced = []
    for f in files:
        row = next((r for r in rows if f in r.exact), None)
        if row:
            row.files[f] = row.exact[f]
            continue
        best = sorted(
            ((len(g), r) for r in rows for g in r.globs if glob_match(g, f)),
            key=lambda m: -m[0],
        )
        if not best:
            unplaced.append(f)
            continue
        if len(best) > 1 and best[0][0] == best[1][0] and best[0][1] is not best[1][1]:
            raise SeriesError(
                f"{f}: matched by globs of the same length in {best[0][1].key} and {best[1][1].key}"
            )
        best[0][1].files[f] = f
    if unplaced:
        raise SeriesError(
            f"{TABLE} does not place: {' '.join(unplaced)} (add each to a patch or to the '-' line)"
        )
    targets = {}
    for row in patches:
        for src, dst in row.files.items():
            if dst in targets:
                raise SeriesError(f"{src} and {targets[dst]} both go to {dst}")
            targets[dst] = src


def crate_root(patches):
    """The driver's crate root and the index of the patch that adds it."""
    makefile = (REPO / DRIVER_MAKEFILE).read_text()
    base = Path(DRIVER_MAKEFILE).parent
    roots = [
        str(base / (obj[:-2] + ".rs"))
        for obj in re.findall(r"[\w/]+\.o\b", makefile)
        if (REPO / base / (obj[:-2] + ".rs")).is_file()
    ]
    if len(roots) != 1:
        raise SeriesError(f"{DRIVER_MAKEFILE}: expected one Rust crate root, found {roots}")
    root = roots[0]
    for index, patch in enumerate(patches):
        if root in patch.files:
            return root, index
    raise SeriesError(f"the crate root {root} stays out of the series")


def mod_rows(patches, root, root_row):
    """Which patch enables each `mod` line of the crate root."""
    lines = (REPO / root).read_text().splitlines()
    names = [m.group(1) for m in map(MOD_LINE.match, lines) if m]
    rows = {name: root_row for name in names}
    for index, patch in enumerate(patches):
        for name in patch.mods:
            if name not in rows:
                raise SeriesError(f"mod:{name} ({patch.key}): {root} has no 'mod {name};'")
            if index < root_row:
                raise SeriesError(f"mod:{name} ({patch.key}) comes before {root} itself")
            rows[name] = index
    # A module's files must be in the tree once its mod line is.
    base = Path(root).parent
    for name, mod_row in rows.items():
        for index, patch in enumerate(patches):
            for src in patch.files:
                path = Path(src)
                if index > mod_row and (path == base / f"{name}.rs" or base / name in path.parents):
                    raise SeriesError(
                        f"{src} comes in {patch.key}, after mod:{name} ({patches[mod_row].key})"
                    )
    return rows


def root_text(root, enabled):
    """The crate root with the mod lines (and their attributes) not yet enabled cut out."""
    lines = (REPO / root).read_text().splitlines(keepends=True)
    keep = [True] * len(lines)
    for i, line in enumerate(lines):
        m = MOD_LINE.match(line)
        if m and m.group(1) not in enabled:
            keep[i] = False
            j = i - 1
            while j >= 0 and lines[j].lstrip().startswith(("#[", "///")):
                keep[j] = False
                j -= 1
    return "".join(line for line, k in zip(lines, keep) if k)


# Edits of upstream files: file -> a function from its text to the new text.
def insert_after(text, anchor, new, file):
    lines = text.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if line.rstrip("\n") == anchor:
            return "".join(lines[: i + 1] + [new] + lines[i + 1 :])
    raise SeriesError(f"{file}: no line {anchor!r} to insert after")


def hook_media_kconfig(text):
    return insert_after(
        text,
        'source "drivers/media/firewire/Kconfig"',
        'source "drivers/media/virtio/Kconfig"\n',
        "drivers/media/Kconfig",
    )


def hook_media_makefile(text):
    first = "obj-y += common/ platform/"
    anchor = next((line for line in text.splitlines() if line.startswith(first)), first)
    return insert_after(
        text, anchor, "obj-$(CONFIG_VIRTIO_MEDIA) += virtio/\n", "drivers/media/Makefile"
    )


def hook_docs_index(text):
    return insert_after(
        text, "\tvimc-devel", "\tvirtio-media\n", "Documentation/driver-api/media/drivers/index.rst"
    )


def hook_maintainers(text):
    """The entry (tools/patches/maintainers-entry.txt), in alphabetical order."""
    name, email = identity()
    entry = (MESSAGES / "maintainers-entry.txt").read_text()
    entry = entry.replace("@MAINTAINER@", f"{name} <{email}>")
    title = entry.splitlines()[0]
    lines = text.splitlines(keepends=True)
    for i in range(1, len(lines) - 1):
        # A section title: after a blank line, before a tag line ("M:\t...").
        # Titles sort case-insensitively, so all before the first greater
        # one sort before the entry.
        if (
            lines[i - 1] == "\n"
            and re.match(r"[A-Z]:\t", lines[i + 1])
            and lines[i].strip().casefold() > title.casefold()
        ):
            return "".join(lines[:i] + [entry, "\n"] + lines[i:])
    raise SeriesError("MAINTAINERS: no section sorts after " + title)


HOOKS = {
    "media_kconfig": ("drivers/media/Kconfig", hook_media_kconfig),
    "media_makefile": ("drivers/media/Makefile", hook_media_makefile),
    "docs_index": ("Documentation/driver-api/media/drivers/index.rst", hook_docs_index),
    "maintainers": ("MAINTAINERS", hook_maintainers),
}


def identity():
    """The series' author: whoever makes it (git's identity in this repository)."""
    m = re.match(r"(.*) <(.*)>", run(["git", "var", "GIT_AUTHOR_IDENT"]))
    if not m:
        raise SeriesError("git var GIT_AUTHOR_IDENT: no name <email>")
    return m.group(1), m.group(2)


def kernel_version(ksrc):
    head = (ksrc / "Makefile").read_text()
    names = ("VERSION", "PATCHLEVEL", "SUBLEVEL")
    parts = [re.search(rf"^{v} = (\d+)", head, re.M) for v in names]
    if not all(parts):
        raise SeriesError(f"{ksrc}/Makefile: no kernel version")
    return ".".join(p.group(1) for p in parts)


def build(ksrc, outdir):
    patches, out = read_table()
    place(patches, out)
    root, root_row = crate_root(patches)
    mods = mod_rows(patches, root, root_row)
    name, email = identity()
    date = run(["git", "log", "-1", "--format=%cI"]).strip()
    env = dict(
        os.environ,
        GIT_AUTHOR_NAME=name,
        GIT_AUTHOR_EMAIL=email,
        GIT_COMMITTER_NAME=name,
        GIT_COMMITTER_EMAIL=email,
        GIT_AUTHOR_DATE=date,
        GIT_COMMITTER_DATE=date,
        GIT_CONFIG_GLOBAL="/dev/null",
        GIT_CONFIG_NOSYSTEM="1",
    )
    scratch = outdir / "git"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    git = lambda *args: run(["git", *args], cwd=scratch, env=env)
    git("init", "-q", "-b", "series")
    for hook in {h for p in patches for h in p.hooks}:
        upstream = HOOKS[hook][0]
        (scratch / upstream).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ksrc / upstream, scratch / upstream)
    version = kernel_version(ksrc)
    git("add", "-A")
    git("commit", "-q", "--allow-empty", "-m", f"Linux {version}: the files the series edits")
    base = git("rev-parse", "HEAD").strip()

    for index, patch in enumerate(patches):
        for src, dst in patch.files.items():
            (scratch / dst).parent.mkdir(parents=True, exist_ok=True)
            if src == root:
                continue
            shutil.copyfile(REPO / src, scratch / dst)
        if index >= root_row:
            enabled = {n for n, row in mods.items() if row <= index}
            (scratch / patch_dst(patches, root)).write_text(root_text(root, enabled))
        for hook in patch.hooks:
            path, edit = HOOKS[hook]
            (scratch / path).write_text(edit((scratch / path).read_text()))
        git("add", "-A")
        if not git("status", "--porcelain"):
            raise SeriesError(f"patch {patch.key} changes nothing")
        body = MESSAGES / f"{patch.key}.txt"
        if not body.is_file():
            raise SeriesError(f"no commit message body {body}")
        signoff = f"Signed-off-by: {name} <{email}>"
        message = f"{patch.subject}\n\n{body.read_text().strip()}\n\n{signoff}\n"
        message_file = outdir / "message.tmp"
        message_file.write_text(message)
        git("commit", "-q", "-F", str(message_file))
        message_file.unlink()

    for old in outdir.glob("*.patch"):
        old.unlink()
    git("config", "branch.series.description", (MESSAGES / "cover-letter.txt").read_text())
    git(
        "format-patch", "-q", "--cover-letter", "--cover-from-description=subject",
        "--no-signature", "-o", str(outdir), f"{base}..HEAD",
    )
    write_placement(outdir, patches, out, mods, version)
    return sorted(outdir.glob("*.patch"))


def patch_dst(patches, src):
    return next(p.files[src] for p in patches if src in p.files)


def write_placement(outdir, patches, out, mods, version):
    """placement.txt: where each file went, for whoever edits the table."""
    lines = [f"# make patches: the series against Linux {version}, file by file"]
    for index, patch in enumerate(patches, 1):
        lines.append(f"\n{index:04d} {patch.subject}")
        for src, dst in patch.files.items():
            lines.append(f"  {src}" + (f" -> {dst}" if dst != src else ""))
        lines += [f"  hook:{h} ({HOOKS[h][0]})" for h in patch.hooks]
        lines += [f"  mod {n};" for n, row in mods.items() if row == index - 1]
    lines.append("\nnot in the series:")
    lines += [f"  {src}" for src in out.files]
    (outdir / "placement.txt").write_text("\n".join(lines) + "\n")


@dataclass
class Note:
    key: str
    kind: str
    path: str
    verdict: str
    why: str
    used: int = 0


def read_notes():
    notes = []
    for number, line in enumerate(NOTES.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = [p.strip() for p in line.split("|")]
        if len(parts) != 5 or parts[3] not in ("ok", "fix"):
            raise SeriesError(f"{NOTES}:{number}: want KEY | TYPE | FILE | ok or fix | WHY")
        notes.append(Note(*parts))
    return notes


def checkpatch_messages(ksrc, patch):
    """(TYPE, FILE or "-", text) of each message of checkpatch.pl --strict."""
    output = subprocess.run(
        ["perl", "scripts/checkpatch.pl", "--strict", "--show-types", "--color=never", str(patch)],
        cwd=ksrc, text=True, capture_output=True,
    ).stdout
    if not re.search(r"^total: \d+ errors", output, re.M):
        raise SeriesError(f"checkpatch.pl gave no verdict on {patch.name}:\n{output}")
    lines = output.splitlines()
    messages = []
    for i, line in enumerate(lines):
        m = re.match(r"(ERROR|WARNING|CHECK):(\w+): (.*)", line)
        if m:
            where = re.match(r"#\d+: FILE: (.*?):\d+:", lines[i + 1] if i + 1 < len(lines) else "")
            path = where.group(1) if where else "-"
            messages.append((m.group(2), path, f"{m.group(1)}: {m.group(3)}"))
    return messages


def checkpatch(ksrc, outdir):
    patches, _ = read_table()
    files = sorted(outdir.glob("[0-9][0-9][0-9][0-9]-*.patch"))[1:]  # not the cover letter
    if len(files) != len(patches):
        raise SeriesError(
            f"{outdir}: {len(files)} patches, the table has {len(patches)} (make patches)"
        )
    notes = read_notes()
    report, unexplained, to_fix = [], 0, 0
    for patch, path in zip(patches, files):
        messages = checkpatch_messages(ksrc, path)
        report.append(f"{path.name}: {len(messages)} messages")
        for kind, where, text in messages:
            note = next(
                (
                    n
                    for n in notes
                    if n.key == patch.key and n.kind == kind and glob_match(n.path, where)
                ),
                None,
            )
            if note is None:
                unexplained += 1
                verdict = "UNEXPLAINED"
            else:
                note.used += 1
                verdict = note.verdict
                to_fix += note.verdict == "fix"
            report.append(f"  {verdict:11} {kind} {where}: {text}")
            if note:
                report.append(f"              {note.why}")
    stale = [n for n in notes if not n.used]
    for note in stale:
        report.append(f"stale note (no such message): {note.key} | {note.kind} | {note.path}")
    total = sum(1 for line in report if re.match(r"  \S", line))
    summary = (
        f"{total} messages: {total - unexplained - to_fix} ok, {to_fix} to fix,"
        f" {unexplained} unexplained, {len(stale)} stale notes"
    )
    (outdir / "checkpatch.txt").write_text("\n".join([summary, *report]) + "\n")
    print(summary)
    return unexplained == 0 and to_fix == 0 and not stale


def glob_match(glob, path):
    return re.fullmatch(".*".join(map(re.escape, glob.split("*"))), path) is not None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ksrc", type=Path, required=True, help="the Linux 7.3 source tree")
    parser.add_argument("--out", type=Path, default=REPO / "build/patches")
    parser.add_argument("--checkpatch", action="store_true", help="check the series of --out")
    args = parser.parse_args()
    try:
        if args.checkpatch:
            sys.exit(0 if checkpatch(args.ksrc.resolve(), args.out.resolve()) else 1)
        args.out.mkdir(parents=True, exist_ok=True)
        for patch in build(args.ksrc.resolve(), args.out.resolve()):
            print(patch)
    except SeriesError as error:
        print(f"make patches: {error}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
