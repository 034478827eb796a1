"""undistill: find the Pareto front of knowledge-distillation defenses with Ray Tune and Optuna.

    python cli.py sweep                 # the embedded default (MNIST-1D) on a local Ray
    python cli.py pareto mnist1d        # the front, from the Parquet files alone

Errors become one line and a non-zero exit: 1 for a failure at run time, 2 for bad input.
Heavy libraries (torch, ray, optuna) load only inside the commands that need them.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

import click

from search_spaces import PROTOCOLS  # light: no torch, Ray or Optuna until a command needs them
from undistill.memory import cyclic_gc_paused

DEFAULT_STORAGE = "./sweeps"
FORMATS = ("table", "json", "csv")


def _format_option(fn):
    return click.option("--format", "fmt", type=click.Choice(FORMATS), default="table",
                        show_default=True, help="Output format (JSON and CSV go to stdout).")(fn)


def _storage_option(fn):
    return click.option("--storage", default=DEFAULT_STORAGE, show_default=True,
                        help="Where sweeps and the shared artifact cache live: a folder (local, or "
                             "NFS on a cluster) or a bucket URI such as s3://bucket/sweeps.")(fn)


def _data_root_option(fn):
    return click.option("--data-root", help="Folder holding datasets read from disk (CIFAR-10/100 "
                                            "as `data download` writes them), at the same path "
                                            "on every node.")(fn)


def _absolute(path: str | None) -> str | None:
    # absolute() not resolve(): a symlinked /data must stay /data, the path every node mounts
    return str(Path(path).expanduser().absolute()) if path else None


def _resource_options(fn):
    fn = click.option("--gpus-per-trial", type=float,
                      help="GPU share of each process of a trial (its own and each student's): "
                           "a fraction up to 1, or a whole number. Default: the preset's, else 0 "
                           "without GPUs and 1/(1 + students) with them.")(fn)
    fn = click.option("--cpus-per-trial", type=float,
                      help="CPUs of each process of a trial. Default: the preset's (1).")(fn)
    fn = click.option("--study-storage",
                      help="Where the Optuna study lives: an RDB URL (postgresql://…), or a "
                           "journal file path or bucket URI. Default: SQLite in the sweep folder "
                           "(a journal on a bucket storage).")(fn)
    return fn


class BadInput(click.ClickException):
    """Bad input: one line, exit 2, before any compute starts."""

    exit_code = 2


class _WholeNumber(click.ParamType):
    """A count given as a flag: digits only, as one line of bad input otherwise (click's own
    refusal is a usage message of several). `--trials 1e20` is not read as a float."""

    name = "integer"

    def convert(self, value, param, ctx):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        try:
            return int(str(value).strip(), 10)
        except ValueError:
            raise BadInput(f"{param.opts[0] if param else 'the flag'} {value}: not a whole number; "
                           "write it in digits") from None


def _run(fn, *args, **kwargs):
    """Call library code; turn undistill's errors into click's (exit 2 for bad input, 1 else)."""
    from undistill.errors import ConfigError, UndistillError

    try:
        return fn(*args, **kwargs)
    except ConfigError as exc:
        raise BadInput(str(exc)) from None
    except UndistillError as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:  # storage: a bucket that refuses a read, a folder gone, a full disk
        import errno

        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            where = f"{exc.filename} could not be written" if exc.filename else "a write failed"
            raise click.ClickException(f"storage full: {where} (no space left); free space there, "
                                       "then run the same command again") from None
        raise click.ClickException(f"storage: {str(exc).strip().splitlines()[0]}") from None
    except KeyboardInterrupt:
        raise click.ClickException("interrupted; run the same command again, or `resume NAME`, "
                                   "to continue where it stopped") from None


def _version() -> str:
    """The installed package's version (pyproject's when run from a source tree), and the phase
    code's, which is part of every artifact key."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        package = version("undistill")
    except PackageNotFoundError:
        import tomllib

        package = tomllib.loads((Path(__file__).parent / "pyproject.toml").read_text())["project"]["version"]
    from trainables.phases import PHASE_CODE_VERSION

    return f"{package} (phase code {PHASE_CODE_VERSION})"


def _print_version(ctx, _param, value):
    if value and not ctx.resilient_parsing:
        click.echo(f"undistill {_version()}")
        ctx.exit()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_print_version,
              help="The version, and the phase code's (part of every artifact key); then exit.")
def main():
    """Sweep knowledge-distillation defenses and query their Pareto front of
    (teacher accuracy ↑, best clone accuracy ↓)."""


@main.command()
@click.option("--preset", default="mnist1d", show_default=True, help="Built-in preset (see `presets`).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Your own preset TOML instead of a built-in one.")
@click.option("--name", help="Sweep name (default: the preset's name). An existing sweep of "
                             "that name with the same config is resumed.")
@_storage_option
@click.option("--address", help="Join the Ray cluster at ADDRESS (`auto` or HOST:PORT) instead "
                                "of starting a local one.")
@click.option("--max-teacher-drop", type=float,
              help="Points of teacher accuracy a defense may cost; a nasty teacher that loses "
                   "more is not distilled (status infeasible).")
@click.option("--concurrency", type=_WholeNumber(), help="At most this many trials at once (default: as "
                                                "many as the cluster's resources hold).")
@_resource_options
@click.option("--shared-storage", is_flag=True,
              help="The --storage folder is mounted at the same path on every node (NFS); "
                   "needed for a local path on a cluster of several machines.")
@_data_root_option
@click.option("--epochs-scale", type=float, default=1.0, show_default=True,
              help="Multiply every schedule's epochs (and lr milestones) by this, for a quick "
                   "look at a paper-scale preset; the result is its own config.")
@click.option("--trials", type=_WholeNumber(), help="Run this many trials instead of the preset's.")
@click.option("--sampler", help="Search with this sampler instead of the preset's: front (the "
                                "default: range ends first, then a model), tpe, gp, nsga2 or random "
                                "(see BENCHMARKS.md).")
@click.option("--protocol", type=click.Choice(PROTOCOLS),
              help="How each phase picks its best epoch: validation (on a split held out of the "
                   "training set; the default) or paper (train on the whole training set, pick on "
                   "the test set, as the reference code does). Another config, named NAME-paper.")
@click.option("--full-suite", is_flag=True, default=None,
              help="Run every attack on every candidate; by default a candidate's remaining attacks "
                   "are skipped once its clones show it is beaten by the front.")
@click.option("--confirm-seeds", type=int,
              help="Once the sweep is done, re-run its front under this many further seeds, as "
                   "`confirm NAME --seeds N` does, and print the front on the means.")
@_format_option
def sweep(preset, config_file, name, storage, address, max_teacher_drop, concurrency,
          gpus_per_trial, cpus_per_trial, study_storage, shared_storage, data_root, epochs_scale,
          trials, sampler, protocol, full_suite, confirm_seeds, fmt):
    """Run a sweep (or finish an interrupted one) and print its Pareto front."""
    if name:  # a running sweep is refused at once: before torch, Ray and the preset load
        _refuse_if_running(storage, name)
    from orchestrator import SweepOptions
    from search_spaces import adjust, load_preset

    chosen = _run(load_preset, None if config_file else preset, config_file)
    if confirm_seeds is not None:
        from orchestrator.confirm import check_seeds

        _run(check_seeds, confirm_seeds, "--confirm-seeds")
    preset_sampler = chosen.sampler
    preset_full = chosen.full_suite
    preset_protocol = chosen.protocol
    chosen = _run(adjust, chosen, epochs_scale=epochs_scale, trials=trials, sampler=sampler,
                  full_suite=full_suite, protocol=protocol)
    default_name = chosen.name if epochs_scale == 1 else f"{chosen.name}-x{epochs_scale:g}"
    if sampler is not None and sampler != preset_sampler:  # side by side with the preset's own search
        default_name += f"-{sampler}"
    if chosen.full_suite and not preset_full:
        default_name += "-full"
    if chosen.protocol != preset_protocol:
        default_name += f"-{chosen.protocol}"
    opts = SweepOptions(chosen, default_name if name is None else name, storage, address, max_teacher_drop, concurrency,
                        cpus_per_trial, gpus_per_trial, study_storage, shared_storage,
                        _absolute(data_root))
    outcome = _run_sweep(opts)
    if confirm_seeds is None:
        _finish(outcome, opts, storage, fmt)
    else:
        if fmt == "table":
            _finish(outcome, opts, storage, fmt)
        _confirmed(_run_quiet(_confirm_run, opts, confirm_seeds, None), opts, storage, fmt)


@main.command()
@click.argument("name")
@_storage_option
@click.option("--address", help="Join the Ray cluster at ADDRESS instead of starting a local one.")
@click.option("--study-storage", help="Where the Optuna study lives, if it moved (default: where "
                                      "the sweep started it).")
@click.option("--shared-storage", is_flag=True, default=None,
              help="The --storage folder is mounted at the same path on every node (NFS).")
@_data_root_option
@_format_option
def resume(name, storage, address, study_storage, shared_storage, data_root, fmt):
    """Finish the sweep NAME with the config, resources and concurrency it was started with."""
    _refuse_if_running(storage, name)  # at once: before torch, Ray and the preset load
    from orchestrator import options_from_stored

    opts = _run(options_from_stored, storage, name, address, study_storage=study_storage,
                shared_storage=shared_storage, data_root=_absolute(data_root))
    _finish(_run_sweep(opts, "resume"), opts, storage, fmt)


def _refuse_if_running(storage: str, name: str) -> None:
    """One line, exit 1, when a driver runs sweep NAME now (see orchestrator.lease)."""
    from orchestrator.lease import check_free

    _run(check_free, _open_storage(storage), name)


def _run_sweep(opts, command: str = "sweep") -> dict:
    """Run it with everything printed meanwhile on stderr (Ray's own warnings included), so that
    stdout carries only the front: `--format json` output stays parseable."""
    from orchestrator import run_sweep

    return _run_quiet(run_sweep, opts, command)


def _run_quiet(fn, *args):
    import contextlib
    import sys

    with contextlib.redirect_stdout(sys.stderr):
        return _run(fn, *args)


def _confirm_run(opts, seeds: int, max_teacher_drop: float | None):
    from orchestrator.confirm import run_confirm

    return run_confirm(opts, seeds, max_teacher_drop)


@main.command()
@click.argument("name")
@click.option("--seeds", type=int, required=True,
              help="How many seeds to add to the sweep's own (seed + 1, seed + 2, ...): each front "
                   "candidate is run again under each, from that seed's own normal teacher and students.")
@_storage_option
@click.option("--address", help="Join the Ray cluster at ADDRESS instead of starting a local one.")
@click.option("--max-teacher-drop", type=float,
              help="Only the front's candidates whose teacher lost at most this many points.")
@click.option("--shared-storage", is_flag=True, default=None,
              help="The --storage folder is mounted at the same path on every node (NFS).")
@_data_root_option
@_format_option
def confirm(name, seeds, storage, address, max_teacher_drop, shared_storage, data_root, fmt):
    """Re-run the front of sweep NAME under further seeds and print the front on the means, each
    number as mean ± sd [95 % interval]. Resumable and idempotent: a replicate already written is
    never run again."""
    _refuse_if_running(storage, name)  # at once: before torch, Ray and the preset load
    from orchestrator import options_from_stored
    from orchestrator.confirm import check_seeds

    _run(check_seeds, seeds)
    opts = _run(options_from_stored, storage, name, address, shared_storage=shared_storage,
                data_root=_absolute(data_root))
    _confirmed(_run_quiet(_confirm_run, opts, seeds, max_teacher_drop), opts, storage, fmt)


def _confirmed(result, opts, storage: str, fmt: str) -> None:
    """`result`: an `orchestrator.confirm.ConfirmResult`."""
    from results.report import render_replicated

    space = opts.preset.space
    if fmt != "table":
        click.echo(render_replicated(result.front, fmt, space))
        return
    seeds = max((len(c.seeds) for c in result.candidates), default=1)
    click.echo(f"\nFront of {opts.name!r} on the means of up to {seeds} seeds: {len(result.front)} of "
               f"{len(result.candidates)} replicated candidates (mean ± sd [95 % interval])")
    click.echo(render_replicated(result.front, "table", space))
    click.echo(f"\n{result.trained} replicates run now, {result.held} already there; results: "
               f"{result.results}", err=True)
    click.echo(PUSHES_BELOW_SAYS, err=True)


PUSHES_BELOW_SAYS = ("below_normal_kd: points the best clone lies below the best clone of the normal teacher, "
                     "seed by seed; pushes_below names the baselines (normal_kd, alone, smoothed) whose "
                     "interval lies wholly above zero")


def _finish(outcome, opts, storage: str, fmt: str) -> None:
    """`outcome`: the sweep's `orchestrator.SweepResult`."""
    from results import range_edges, render

    front, name, space = outcome.front, opts.name, opts.preset.space
    if fmt != "table":
        click.echo(render(front, fmt, space=space))
        return
    click.echo(f"\nPareto front of {name!r}: {len(front)} of {len(outcome.trials)} trials "
               "(teacher accuracy ↑, best clone accuracy ↓)")
    click.echo(render(front, "table", space=space))
    click.echo(f"\nresults: {outcome.results}  (query: python cli.py pareto "
               f"{name}{'' if storage == DEFAULT_STORAGE else f' --storage {storage}'})")
    from orchestrator.layout import read_sweep

    record = _run(read_sweep, _open_storage(storage), name)
    edges = range_edges(front, record.searched_space, record.focus_teacher_drop)
    if edges:
        click.echo(edges, err=True)


@main.command()
@click.argument("name")
@_storage_option
@click.option("--max-teacher-drop", type=float, help="Only defenses that cost the teacher at most "
                                                     "this many points.")
@click.option("--defense", help="Only this defense family (one the sweep searched: nasty, stingy, ...).")
@click.option("--attack", help="Judge defenses by this attack alone (kd-T4, dafl, or the family kd); "
                               "default: the best clone over every attack.")
@click.option("--single-seed", is_flag=True,
              help="The front of the sweep's own seed, even where `confirm` has replicated it.")
@_format_option
@cyclic_gc_paused()
def pareto(name, storage, max_teacher_drop, defense, attack, single_seed, fmt):
    """Print the Pareto front of sweep NAME from its Parquet results (no Ray, no torch). Once
    `confirm` has replicated it, the front on the means over seeds, with intervals."""
    from orchestrator.layout import read_sweep
    from results import (
        ResultStore,
        attack_names,
        by_attack,
        dominates,
        front_hypervolume,
        is_attack,
        lacking_attack,
        pareto_front,
        range_edges,
        render,
    )
    from undistill.space import check_max_teacher_drop

    where = _open_storage(storage)
    stored = _run(read_sweep, where, name)
    _run(check_max_teacher_drop, max_teacher_drop)
    if defense is not None and defense not in stored.space.names:
        searched = ", ".join(stored.space.names) or "no defense"
        raise BadInput(f"--defense {defense!r}: sweep {name!r} searched {searched}")
    rows = _run(ResultStore(where, name).sweep_rows)
    trials, students = rows.trials, rows.students
    if attack is not None:
        known = attack_names(students)
        if attack not in known:
            raise BadInput(f"--attack {attack!r}: sweep {name!r} ran {', '.join(known) or 'no attack yet'}")
    copies, copy_students = rows.replicate_trials, rows.replicate_students
    if copies and not single_seed:
        _replicated_front(name, stored, trials, students, copies, copy_students, attack, defense,
                          max_teacher_drop, fmt)
        return
    if attack is not None:
        lacking = lacking_attack(trials, students, attack)
        trials = by_attack(trials, students, attack)
        students = [s for s in students if is_attack(s["attack"], attack)]
    if defense is not None:
        trials = [t for t in trials if t["defense"] == defense]
    # trials whose attacks stopped once the front over everything beat them: they cannot be
    # placed on a front judged by one attack, nor on a family's when another family beat them
    cut = len(lacking) if attack is not None else 0
    front = pareto_front(trials, max_teacher_drop)
    if attack is None and defense is not None:  # those this family's own front does not beat
        points = [(f["teacher_acc"], f["student_acc"]) for f in front]
        cut = sum(t["status"] == "dominated" and not any(dominates(p, (t["teacher_acc"], t["student_acc"]))
                                                         for p in points) for t in trials)
    click.echo(render(front, fmt, space=stored.space))
    if fmt == "table":
        hv, ref = front_hypervolume(front, students)
        noun = "defense" if len(front) == 1 else "defenses"
        click.echo(f"\n{len(front)} {noun} on the front · hypervolume {hv:.1f} "
                   f"(reference: teacher {ref[0]:.0f} %, clone {ref[1]:.2f} % = best clone of the "
                   "normal teacher)", err=True)
        edges = range_edges(front, stored.searched_space, stored.focus_teacher_drop)
        if edges:
            click.echo(edges, err=True)
    if cut:
        one = cut == 1
        what = (f"{'lacks' if one else 'lack'} {attack}" if attack is not None
                else f"{'was' if one else 'were'} cut short")
        click.echo(f"{cut} {'candidate' if one else 'candidates'} {what}: {'its' if one else 'their'} attacks "
                   "stopped once the "
                   f"front over every {'attack' if attack is not None else 'defense'} beat them, so this "
                   f"front leaves {'it' if cut == 1 else 'them'} out; sweep with --full-suite to judge "
                   "every candidate by every attack", err=True)


def _replicated_front(name, stored, trials, students, copies, copy_students, attack, defense,
                      max_teacher_drop, fmt) -> None:
    from results import pareto_front
    from results.replicates import mean_front, replicated
    from results.report import render_replicated

    candidates = replicated(trials, students, copies, copy_students, attack)
    if defense is not None:
        candidates = [c for c in candidates if c.defense == defense]
    front = mean_front(candidates, max_teacher_drop)
    click.echo(render_replicated(front, fmt, stored.space))
    if fmt != "table":
        return
    seeds = sorted({s for c in candidates for s in c.seeds})
    click.echo(f"\n{len(front)} of {len(candidates)} replicated candidates on the front of the means over seeds "
               f"{', '.join(map(str, seeds))}{f' (judged by {attack} alone)' if attack else ''}; "
               "each number: mean ± sd [95 % interval]", err=True)
    click.echo(PUSHES_BELOW_SAYS, err=True)
    ids = {c.trial_id for c in candidates}
    from results import by_attack

    judged = by_attack(trials, students, attack) if attack is not None else trials
    single = [t for t in pareto_front(judged, max_teacher_drop) if defense is None or t["defense"] == defense]
    missing = [t for t in single if t["trial_id"] not in ids]
    if missing:
        one = len(missing) == 1
        click.echo(f"{len(missing)} {'defense' if one else 'defenses'} of the single-seed front "
                   f"{'has' if one else 'have'} no replicates yet: `confirm {name} --seeds N` runs "
                   f"{'it' if one else 'them'}; `--single-seed` shows that front", err=True)


@main.command()
@click.argument("name")
@_storage_option
@click.option("--out", "out_dir", default=None, help="Folder for the report (default: reports/NAME).")
def report(name, storage, out_dir):
    """Write a report folder for sweep NAME: report.md, front.png, clones.png, students.png,
    hypervolume.png, curves.png (the learning curves), front.json."""
    from orchestrator.layout import read_sweep
    from results import ResultStore
    from results.sweep_report import build_report
    from undistill.files import atomic_write

    where = _open_storage(storage)
    stored = _run(read_sweep, where, name)
    store = ResultStore(where, name)
    rows = _run(store.sweep_rows)
    trials, students = rows.trials, rows.students
    if not trials:
        raise BadInput(f"sweep {name!r} has no finished trial yet; run `status {name}` to see it")
    folder = Path(out_dir or Path("reports") / name)
    replicates = (rows.replicate_trials, rows.replicate_students)
    files = build_report(name, stored, trials, students, store.location, replicates,
                         epochs=_run(store.epoch_rows))
    for file, data in files.items():
        try:
            atomic_write(folder / file, lambda f, data=data: f.write(data))
        except OSError as exc:
            raise BadInput(f"--out {folder}: cannot write there ({exc.strerror or exc}); "
                           "give a folder you can write to") from None
    click.echo(f"report of {name!r}: {folder / 'report.md'} (with {', '.join(f for f in files if f != 'report.md')})")


def _open_storage(location: str):
    from results import Storage

    return _run(Storage, location)


@main.command()
@click.argument("name")
@_storage_option
@_format_option
@click.option("--watch", is_flag=True, help="Redraw every --interval seconds until the sweep finishes "
              "(Ctrl-C stops watching, not the sweep).")
@click.option("--interval", type=click.FloatRange(min=0.5), default=2.0, show_default=True,
              help="Seconds between redraws with --watch.")
def status(name, storage, fmt, watch, interval):
    """Progress of sweep NAME: trials by status, front size, what trains now (each phase and its
    epoch), and where the work ran."""
    import time

    where = _open_storage(storage)
    if not watch:
        click.echo(_status_text(where, name, fmt)[0])
        return
    tty = sys.stdout.isatty()
    try:
        while True:
            text, finished = _status_text(where, name, fmt)
            # a terminal: redrawn in place; elsewhere (a log): one block after another
            click.echo(("\x1b[H\x1b[J" if tty else "") + text + ("" if tty else "\n"))
            if finished:
                return
            time.sleep(interval)
    except KeyboardInterrupt:  # the user stops watching; the sweep goes on
        return


@cyclic_gc_paused()
def _status_text(where, name: str, fmt: str) -> tuple[str, bool]:
    """`status NAME`'s output in `fmt`, and whether the sweep has finished."""
    from collections import Counter

    from orchestrator.layout import read_state, read_sweep
    from orchestrator.lease import read_holder
    from orchestrator.live import running
    from results import STATUSES, ResultStore, pareto_front, render
    from results.usage import node_usage

    stored = _run(read_sweep, where, name)
    store = ResultStore(where, name)
    every = _run(store.sweep_rows)
    rows = every.trials
    counts = {s: sum(r["status"] == s for r in rows) for s in STATUSES}
    upstream, runs, notes = _usage_files(where, name)
    nodes, active_s = node_usage(rows, every.students, upstream, runs)
    finished = bool(_run(read_state, where, name).get("finished"))
    now = [] if finished else _run(running, where, name)
    holder = _run(read_holder, where, name)
    info = {
        "sweep": name,
        "preset": stored.preset_name,
        "trials_done": len(rows),
        "trials_total": stored.trials,
        **counts,
        "front_size": len(pareto_front(rows)),
        # `confirm`: the front's candidates re-run under further seeds
        **_replicate_status(every),
        # which attack made each finished trial's best clone, most often first
        "best_attacks": ", ".join(f"{a} ×{n}" for a, n in Counter(
            r["best_attack"] for r in rows if r["status"] == "ok" and r["best_attack"]).most_common()),
        "finished": finished,
        "running_now": len(now),
        # the lease (orchestrator.lease): who drives it now, if anyone
        "driver": "–" if holder is None else holder.describe() + (
            f" (gone: {holder.gone()})" if holder.gone() else ""),
        "compute_s": round(sum(r["compute_s"] or 0.0 for r in rows), 1),
        "active_s": round(active_s, 1),
        "created_at": stored.created_at,
    }
    if fmt != "table":  # the notes on stderr: stdout stays parseable
        for note in notes:
            click.echo(note, err=True)
    if fmt == "csv":
        return render([info], fmt, columns=tuple(info)), finished
    if fmt == "json":
        return json.dumps({**info, "running": [asdict(r) for r in now], "nodes": nodes}, indent=1), finished
    width = max(len(key) for key in info)
    lines = [f"{key:<{width}} {value}" for key, value in info.items()]
    if now:
        lines += ["", "training now"] + [f"  {r.progress(stored.space)}" for r in now]
    if nodes:
        lines += ["", "where it ran (utilisation: share of each node's cores, or GPUs, kept busy "
                  "while the sweep was active)"]
        shown = [{**n, "utilisation": "–" if n["utilisation"] is None else f"{n['utilisation']:.0%}"}
                 for n in nodes]
        lines.append(render(shown, "table", columns=tuple(nodes[0])))
    lines += ["", *notes] if notes else []
    return "\n".join(lines), finished


def _usage_files(where, name: str) -> tuple[list[dict], list[dict], list[str]]:
    """upstream.json's phases and cluster.json's runs, for `status`'s where-it-ran; a damaged
    one is left out, with a note, rather than failing the whole status: they feed nothing else,
    and the sweep's next run writes them anew."""
    from orchestrator.layout import read_cluster_runs, read_upstream
    from undistill.errors import DamagedSweepError

    read, notes = [], []
    for reader in (read_upstream, read_cluster_runs):
        try:
            read.append(reader(where, name))
        except DamagedSweepError as exc:
            read.append([])
            notes.append(f"{exc}; where it ran is shown without it")
    return read[0], read[1], notes


def _replicate_status(rows) -> dict:
    """`status`'s replicate lines, from the sweep's `SweepRows`: every seed measured, the
    replicates by status, and the front on the means (its size, and how many of its defenses
    push clones below normal KD for sure)."""
    from results.replicates import mean_front, replicated

    trials, copies = rows.trials, rows.replicate_trials
    front = mean_front(replicated(rows.trials, rows.students, copies, rows.replicate_students))
    return {
        "seeds": " ".join(str(s) for s in sorted({r["seed"] for r in (*trials, *copies) if r["seed"] is not None})),
        "replicates": len(copies),
        "replicates_ok": sum(r["status"] == "ok" for r in copies),
        "replicated_front": len(front),
        "below_normal_kd": sum("normal_kd" in c.pushes_below for c in front),
        "replicates_compute_s": round(sum(r["compute_s"] or 0.0 for r in copies), 1),
    }


@main.group()
def data():
    """Datasets read from disk (CIFAR-10, CIFAR-100)."""


@data.command()
@click.argument("dataset", type=click.Choice(["cifar10", "cifar100"]))
@click.option("--root", required=True, help="Folder to put it in; pass it to `sweep --data-root`.")
def download(dataset, root):
    """Fetch DATASET's official archive into --root and check its MD5 (needs internet, once)."""
    from trainables import cifar_data

    try:
        where = cifar_data.download(dataset, root)
    except (OSError, RuntimeError) as exc:  # no network, a full disk, a bad archive
        reason = str(getattr(exc, "reason", None) or exc).strip().splitlines()[0]
        raise click.ClickException(f"could not download {dataset} into {root}: {reason}") from None
    click.echo(f"{dataset} is in {where}; run sweeps with --data-root {_absolute(root)}")


@main.command()
@_storage_option
@click.option("--format", "fmt", type=click.Choice((*FORMATS, "markdown")), default="table", show_default=True,
              help="Output format (JSON, CSV and markdown go to stdout).")
def leaderboard(storage, fmt):
    """Every sweep in STORAGE at once: per dataset and defense family, the defense that puts
    clones furthest below its sweep's normal-teacher KD within 0.5, 1 and 2 points of teacher
    cost (from the Parquet files alone: no Ray, no torch)."""
    from orchestrator.layout import list_sweeps
    from results import BUDGETS, ResultStore
    from results import leaderboard as standings
    from results.leaderboard import COLUMNS, TABLE_COLUMNS
    from results.report import render

    where = _open_storage(storage)
    sweeps = {name: _run(ResultStore(where, name).sweep_rows) for name in _run(list_sweeps, where)}
    board = standings(sweeps)
    if not board:
        raise BadInput(f"no sweep in {storage} has a finished trial yet; sweep first (python cli.py sweep "
                       f"--storage {storage})")
    if fmt in ("table", "markdown"):
        click.echo(render([s.cells() for s in board], fmt, columns=TABLE_COLUMNS))
    else:
        click.echo(render([s.to_dict() for s in board], fmt, columns=COLUMNS))
    if fmt == "table":
        click.echo(f"\n{len(sweeps)} {'sweep' if len(sweeps) == 1 else 'sweeps'} · the best defense per family "
                   f"within {', '.join(f'{b:g}' for b in BUDGETS)} points of teacher cost, by points below "
                   "its sweep's best clone of the normal teacher; a replicated sweep (`confirm`) by its "
                   "means over seeds, with 95 % intervals", err=True)


@main.command()
@_format_option
def presets(fmt):
    """List the built-in presets."""
    from search_spaces import list_presets

    items = [{"preset": k, "description": v} for k, v in list_presets().items()]
    if fmt == "json":
        click.echo(json.dumps(items, indent=1))
    else:
        from results import render

        click.echo(render(items, fmt, columns=("preset", "description")))


if __name__ == "__main__":
    main()
