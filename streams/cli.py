"""The `leadflow` command line."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.text import Text

from streams.common.event_files import event_lines
from streams.common.settings import Settings, load_settings, settings_reference, unknown_variables
from streams.core.explain import explain as explain_lead
from streams.core.explain import ledger as explain_ledger
from streams.core.rules import Rules, load_rules
from streams.errors import LeadflowError
from streams.local.generator import TrafficShape
from streams.local.generator import generate as generate_events
from streams.offline.explain_render import ledger_document, print_history, print_ledger
from streams.offline.replay import BadLine, Replayer, ids_bearing_on, lines_naming

if TYPE_CHECKING:
    from streams.common.event_order import RejectedLine

app = typer.Typer(
    name="leadflow",
    help="Decide when leads become MQLs and SQLs from what they do, and report the funnel.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain help: whole sentences however the docstrings wrap, no type tag on a flag.
    rich_markup_mode=None,
)
schemas_app = typer.Typer(help="The event contract.", no_args_is_help=True, rich_markup_mode=None)
rules_app = typer.Typer(
    help="The qualification rules file.", no_args_is_help=True, rich_markup_mode=None
)
topics_app = typer.Typer(
    help="leadflow's Kafka topics.", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(schemas_app, name="schemas")
app.add_typer(rules_app, name="rules")
app.add_typer(topics_app, name="topics")
spend_app = typer.Typer(
    help="Campaign spend (cost per lead, per customer).",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(spend_app, name="spend")

# Messages on stderr keep whole lines: a log collector or a test reads them one per line.
err = Console(stderr=True, soft_wrap=True)


def _console() -> Console:
    # Piped output keeps whole lines (a terminal reports its own width).
    return Console() if sys.stdout.isatty() else Console(width=160)


RulesOption = Annotated[
    Path | None,
    typer.Option(
        "--rules",
        help="Rules file (TOML). Default: LEADFLOW_RULES_FILE or the shipped rules.",
        dir_okay=False,
    ),
]
EventsArgument = Annotated[
    str, typer.Argument(metavar="EVENTS", help="JSON-lines event log; '-' reads stdin.")
]
LogArgument = Annotated[
    str | None,
    typer.Argument(help="JSON-lines event log; '-' reads stdin. Or --from-topic."),
]
FromTopicOption = Annotated[
    bool,
    typer.Option(
        "--from-topic",
        help="Read the events topic (LEADFLOW_TOPICS__EVENTS) from its first offset.",
    ),
]
LiveRulesOption = Annotated[
    Path | None,
    typer.Option(
        "--live",
        help="The rules in force. Default: LEADFLOW_RULES_FILE or the shipped rules.",
        dir_okay=False,
    ),
]


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except LeadflowError as exc:
        err.print(Text.assemble(("error:", "red"), f" {exc}"), highlight=False)
        sys.exit(1)


@app.callback()
def _start(ctx: typer.Context) -> None:
    # The one place that reads the environment: every command gets these settings.
    ctx.obj = load_settings()
    for warning in unknown_variables():
        err.print(Text.assemble(("warning:", "yellow"), f" {warning}"), highlight=False)


def _settings(ctx: typer.Context) -> Settings:
    settings: Settings = ctx.obj
    return settings


def _rules(path: Path | None, settings: Settings) -> Rules:
    return load_rules(path or settings.rules_file)


@contextmanager
def _open_events(name: str) -> Iterator[Iterator[bytes]]:
    """The lines of an events file; one error line if it cannot be read or is not JSON lines."""
    with event_lines(name) as lines:
        yield lines


@contextmanager
def _reader_may_stop() -> Iterator[None]:
    """A reader that stops early (`| head -3`) has what it asked for: end quietly, exit 0."""
    try:
        yield
    except BrokenPipeError:
        # Python flushes stdout again at exit: point it at /dev/null so that flush cannot fail.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        raise typer.Exit(0) from None


def _writable(path: Path | None, option: str) -> None:
    """Fail before any work when `option`'s file cannot be written where it is asked for."""
    if path is None:
        return
    folder = path.parent
    if not folder.is_dir():
        raise LeadflowError(
            f"cannot write {path} ({option}): the folder {folder} does not exist; "
            "create it first or give another path"
        )
    if path.is_dir():
        raise LeadflowError(f"cannot write {path} ({option}): it is a folder; give a file name")


JobsOption = Annotated[
    int,
    typer.Option(
        "--jobs",
        min=0,
        metavar="N",
        help="Processes to replay in (0: one per core). The output is the same for any number; "
        "above 1, the log is held in memory.",
    ),
]
ArrivalOrderOption = Annotated[
    bool,
    typer.Option(
        "--arrival-order",
        help="Keep the order of the lines, as a live stream saw them, instead of sorting the "
        "events by event time.",
    ),
]


def _one_log(events: str | None, from_topic: bool) -> None:
    if (events is None) == (not from_topic):
        err.print("give an events file or --from-topic (one of them)")
        raise typer.Exit(2)


def _log_lines(events: str | None, settings: Settings) -> list[bytes]:
    """The non-blank lines of the events file, or of the events topic when `events` is None."""
    if events is None:
        from streams.common.kafka_clients import read_whole_topic

        return read_whole_topic(settings, settings.topics.events)
    with _open_events(events) as handle:
        return [line for line in handle if line.strip()]


def _in_event_time_order(
    lines: list[bytes], events: str | None, settings: Settings, processes: int
) -> tuple[list[bytes], list[RejectedLine]]:
    """The valid events of `lines` in event-time order (checked in `processes`), and the
    invalid lines, numbered in `lines` from 1."""
    from streams.common.event_order import check_lines, lines_in_event_time_order

    rejected: list[RejectedLine] = []
    source = events or "the events topic"
    checked = check_lines(lines, settings.max_event_bytes, processes)
    with lines_in_event_time_order(
        source, lines, settings.max_event_bytes, rejected.append, checked=checked
    ) as ordered:
        in_order, _ = ordered.held()
    return in_order, rejected


@app.command(short_help="Run the core over an event log; print the stage changes.")
def replay(
    ctx: typer.Context,
    events: EventsArgument,
    rules: RulesOption = None,
    accounts: Annotated[
        bool,
        typer.Option(
            "--accounts", help="Print the account changes (leadflow.account-changes) instead."
        ),
    ] = False,
    arrival_order: ArrivalOrderOption = False,
    handoffs: Annotated[
        bool,
        typer.Option("--handoffs", help="Print the handoff events (leadflow.handoff) instead."),
    ] = False,
    jobs: JobsOption = 1,
) -> None:
    """Run the qualification core over an event log; print stage changes as JSON lines.

    The events are replayed in event-time order (by occurred_at, then event_id), so any order
    of the same lines gives the same result; --arrival-order replays them in the file's order.
    Invalid lines are reported on stderr with their number and reason and do not stop the run;
    the last line on stderr counts them. Exits 1 if the file cannot be read, is not JSON lines,
    or holds no valid event. --jobs N replays in N processes, each a share of the leads (with
    their identities and accounts), and prints exactly what one process prints.
    """
    from contextlib import ExitStack

    from streams.common.event_order import (
        Checked,
        FollowedLines,
        check_lines,
        lines_in_event_time_order,
    )
    from streams.offline.replay import (
        StateKey,
        in_line_order,
        jobs_wanted,
        keys_of,
        printed_line,
        printed_shard,
        replay_sharded,
        total_counts,
    )

    settings = _settings(ctx)
    loaded = _rules(rules, settings)

    def make_replayer() -> Replayer:
        return Replayer(
            loaded, max_event_bytes=settings.max_event_bytes, accounts=accounts, handoffs=handoffs
        )

    replayer = make_replayer()
    processes = jobs_wanted(jobs)
    out = sys.stdout.buffer
    rejected = 0
    counts = replayer.counts
    leads = accounts_seen = 0

    def report_bad(line_number: int, reason: str) -> None:
        err.print(f"line {line_number}: {reason}", markup=False, highlight=False)

    def show(shown: bytes | str, line_number: int) -> None:
        if isinstance(shown, str):
            report_bad(line_number, shown)
        else:
            out.write(shown)
            out.write(b"\n")

    with ExitStack() as stack:
        handle = stack.enter_context(_open_events(events))
        stack.enter_context(_reader_may_stop())
        lines: Any = handle
        # With processes, every line is held in memory (each process inherits them), and so
        # is the output of each until it is merged in the log's order.
        log: list[bytes] = list(handle) if processes > 1 else []
        if not arrival_order:
            checked: list[Checked] | None = None
            file_keys: list[list[StateKey]] = []
            if processes > 1:
                # One pass in the processes checks each line and finds the states it touches.
                account_rules = [loaded] if accounts else []
                checked, file_keys = check_lines(
                    log,
                    settings.max_event_bytes,
                    processes,
                    partial(keys_of, account_rules=account_rules),
                )
            ordered = stack.enter_context(
                lines_in_event_time_order(
                    events,
                    log if processes > 1 else handle,
                    settings.max_event_bytes,
                    lambda bad: report_bad(bad.origin.line, bad.reason),
                    None if events == "-" else os.path.getsize(events),
                    checked=checked,
                )
            )
            rejected = ordered.rejected
            lines = FollowedLines(ordered)
        if processes == 1:
            for item in replayer.run(lines):
                shown = printed_line(item, accounts, handoffs)
                if isinstance(item, BadLine):
                    # Sorted, the replayer numbers the lines it was given: name the file's line.
                    show(item.reason, item.line_number if arrival_order else lines.current.line)
                elif shown is not None:
                    show(shown, 0)
            leads, accounts_seen = len(replayer.states), len(replayer.account_states)
        else:
            file_lines: list[int] | None = None
            keys: list[list[StateKey]] | None = None
            if not arrival_order:
                log, file_lines = ordered.held()
                keys = [file_keys[number - 1] for number in file_lines]
            [parts] = replay_sharded(log, processes, [make_replayer], printed_shard, keys)
            for number, shown in in_line_order(part.shown() for part in parts):
                show(shown, number if file_lines is None else file_lines[number - 1])
            counts = total_counts(part.counts for part in parts)
            leads = sum(part.leads for part in parts)
            accounts_seen = sum(part.accounts for part in parts)
        out.flush()
    bad = counts.bad + rejected
    summary = (
        f"replayed {counts.events} events of {leads} leads "
        f"({counts.duplicates} duplicates, {bad} bad lines) -> "
        f"{counts.stage_changes} stage changes"
    )
    if handoffs:
        summary += f", {counts.handoffs} handoff events"
    if accounts:
        summary += (
            f"; {counts.account_signals} account signals to {accounts_seen} "
            f"accounts -> {counts.account_changes} account changes"
        )
    err.print(summary, highlight=False)
    _fail_without_valid_events(events, counts.events + counts.duplicates, bad)


def _fail_without_valid_events(name: str, valid: int, bad: int) -> None:
    """A run in which nothing was valid is a failed run, whatever it printed."""
    if valid:
        return
    shown = "standard input" if name == "-" else name
    what = f"all {bad} lines are bad" if bad else "it holds no event"
    err.print(Text.assemble(("error:", "red"), f" no valid event in {shown}: {what}"))
    raise typer.Exit(1)


@app.command(short_help="One lead's score history, and why each stage change happened.")
def explain(
    ctx: typer.Context,
    lead_id: Annotated[str, typer.Argument(metavar="LEAD_ID", help="The lead's id.")],
    events: EventsArgument,
    rules: RulesOption = None,
    show_ledger: Annotated[
        bool,
        typer.Option(
            "--ledger",
            help="Also show what makes the scores, at the last stage change (or --at).",
        ),
    ] = False,
    at: Annotated[
        str | None,
        typer.Option("--at", help="The ledger right after this event (its event_id)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the ledger as JSON.")] = False,
    arrival_order: ArrivalOrderOption = False,
) -> None:
    """Show one lead's score history and why each of its stage changes happened; with
    --ledger, which fact gave how many fit points, and what each engagement event still
    gives the score (its points, what its cap clipped, its decay), adding up to the scores.
    Its events are replayed in event-time order (--arrival-order: in the file's order)."""
    from streams.common.event_order import lines_in_event_time_order

    settings = _settings(ctx)
    loaded = _rules(rules, settings)
    replayer = Replayer(loaded, max_event_bytes=settings.max_event_bytes, keep_compacted=True)
    # The lead's lines and those of the identities linked to it, which the log names only in
    # link events: standard input is kept to be read twice, a file is opened again.
    with _open_events(events) as handle:
        kept = list(handle) if events == "-" else None
        ids = ids_bearing_on(handle if kept is None else kept, lead_id, settings.max_event_bytes)
    rejected = 0
    with _open_events(events) if kept is None else nullcontext(iter(kept)) as handle:
        naming = lines_naming(handle, ids)
        if arrival_order:
            for _ in replayer.run(naming):
                pass
        else:
            max_bytes = settings.max_event_bytes
            with lines_in_event_time_order(events, naming, max_bytes, lambda _: None) as ordered:
                for _ in replayer.run(raw for _, raw in ordered):
                    pass
            rejected = ordered.rejected
    if replayer.counts.bad + rejected:
        err.print(
            f"{replayer.counts.bad + rejected} of the lines naming this lead were bad and left out "
            f"(leadflow replay {events} lists them)",
            markup=False,
            highlight=False,
        )
    state = replayer.states.get(lead_id)
    if state is None:
        err.print(f"no events of lead {lead_id!r} in {events}", markup=False, highlight=False)
        raise typer.Exit(1)
    entries = [*replayer.compacted.get(lead_id, ()), *state.tail]
    linked = state.linked
    visitors = {
        summary.from_id: [*replayer.compacted.get(summary.from_id, ()), *visitor.tail]
        for summary in linked
        if (visitor := replayer.states.get(summary.from_id)) is not None
    }
    if as_json or show_ledger or at is not None:
        moment = _ledger_moment(entries, state, at)
        shown = explain_ledger(entries, state.attribution, loaded, moment, linked, visitors)
        if as_json:
            document = ledger_document(lead_id, shown)
            options = orjson.OPT_INDENT_2 | orjson.OPT_UTC_Z
            sys.stdout.buffer.write(orjson.dumps(document, option=options) + b"\n")
            return
    console = _console()
    history = explain_lead(entries, state.attribution, loaded, linked, visitors)
    print_history(lead_id, loaded.rules_version, history, console)
    if show_ledger or at is not None:
        print_ledger(shown, console)


def _ledger_moment(entries: list[Any], state: Any, at: str | None) -> int:
    """Where the ledger is shown: right after event `at`, else the last stage change's cause,
    else the last event."""
    if at is not None:
        found = [i for i, entry in enumerate(entries) if entry.event_id == at]
        if not found:
            err.print(f"no accepted event {at!r} of this lead", markup=False, highlight=False)
            raise typer.Exit(1)
        return found[0]
    transitions = state.fold.transitions
    if transitions:
        cause = transitions[-1].cause
        return max(i for i, entry in enumerate(entries) if entry.event_id == cause)
    return len(entries) - 1


@app.command(short_help="Compare a draft rules file with the rules in force on a log.")
def whatif(
    ctx: typer.Context,
    rules: Annotated[
        Path,
        typer.Option("--rules", help="The draft rules file (TOML).", dir_okay=False),
    ],
    events: LogArgument = None,
    from_topic: FromTopicOption = False,
    live: LiveRulesOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the comparison as JSON.")] = False,
    html: Annotated[
        Path | None,
        typer.Option("--html", help="Also write the comparison as one HTML page.", dir_okay=False),
    ] = None,
    arrival_order: ArrivalOrderOption = False,
    jobs: JobsOption = 1,
) -> None:
    """Replay a log under the rules in force and under a draft; print both funnels side by side
    and every lead whose stage history the draft changes. The events are replayed in
    event-time order, from a file or the topic (--arrival-order: in the order read). --jobs 2
    replays the two rule sets side by side; more also splits the leads between processes."""
    from streams.offline.replay import jobs_wanted
    from streams.offline.whatif import what_if
    from streams.offline.whatif_terminal import print_what_if

    settings = _settings(ctx)
    in_force = _rules(live, settings)
    draft = load_rules(rules)
    processes = jobs_wanted(jobs)
    _one_log(events, from_topic)
    _writable(html, "--html")
    lines = _log_lines(events, settings)
    if not arrival_order:
        in_order, rejected = _in_event_time_order(lines, events, settings, processes)
        # Bad lines go last: the comparison counts them as it always did.
        lines = in_order + [lines[bad.origin.line - 1] for bad in rejected]
    comparison = what_if(lines, in_force, draft, settings.max_event_bytes, processes)
    with _reader_may_stop():
        if as_json:
            sys.stdout.buffer.write(orjson.dumps(comparison, option=orjson.OPT_INDENT_2) + b"\n")
        else:
            print_what_if(comparison, len(lines), _console())
    if html is not None:
        from streams.offline.whatif_page import write_what_if_html

        write_what_if_html(comparison, html, len(lines))
        err.print(f"wrote {html}", markup=False, highlight=False)
    if comparison.bad_lines:
        listed = "" if events is None else f"leadflow replay {events} lists them; "
        err.print(
            f"{comparison.bad_lines} of {len(lines)} lines were bad and left out "
            f"({listed}--json counts them)",
            markup=False,
            highlight=False,
        )
    valid = len(lines) - comparison.bad_lines
    _fail_without_valid_events(events or "the events topic", valid, comparison.bad_lines)


@app.command(short_help="Propose a draft rules file learnt from what sales decided.")
def tune(
    ctx: typer.Context,
    events: LogArgument = None,
    from_topic: FromTopicOption = False,
    live: LiveRulesOption = None,
    out: Annotated[
        Path,
        typer.Option("--out", help="Where to write the draft rules file.", dir_okay=False),
    ] = Path("rules.tuned.toml"),
    force: Annotated[bool, typer.Option("--force", help="Overwrite --out if it exists.")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the evidence and the check as JSON.")
    ] = False,
    jobs: JobsOption = 1,
) -> None:
    """Learn from the log's outcomes (MQLs that became SQL, were disqualified or lost) how much
    each engagement, content category, fit fact and intent pattern predicts conversion, and
    write a draft of the rules with every changed line's evidence; check it on the newest
    cohorts it did not learn from, against the rules in force. Too few outcomes: no draft.
    --jobs N replays in N processes, each a share of the leads: the same draft."""
    from importlib import resources

    from streams.offline.replay import jobs_wanted
    from streams.offline.tune import tune as tune_rules
    from streams.offline.tune_terminal import print_tuned, worse_line

    settings = _settings(ctx)
    _one_log(events, from_topic)
    _writable(out, "--out")
    if out.exists() and not force:
        raise LeadflowError(f"{out} exists: give another --out, or --force to overwrite it")
    rules_path = live or settings.rules_file
    in_force = _rules(live, settings)
    if rules_path is None:
        live_text = resources.files("streams.core").joinpath("rules.toml").read_text("utf-8")
    else:
        live_text = rules_path.read_text("utf-8")
    processes = jobs_wanted(jobs)
    lines, rejected = _in_event_time_order(
        _log_lines(events, settings), events, settings, processes
    )
    tuned = tune_rules(lines, in_force, live_text, settings.max_event_bytes, processes)
    out.write_text(tuned.draft_toml, encoding="utf-8")
    read_from = "--from-topic" if events is None else ("EVENTS.jsonl" if events == "-" else events)
    live_option = f" --live {live}" if live is not None else ""
    whatif_command = f"leadflow whatif --rules {out}{live_option} {read_from}"
    with _reader_may_stop():
        if as_json:
            warning = worse_line(tuned)
            if warning is not None:  # said first, on stderr, where a person reads it
                err.print(warning, markup=False, highlight=False)
            document = {"draft_path": str(out), "whatif": whatif_command, "tuned": tuned}
            encoded = orjson.dumps(document, default=_feature_json, option=orjson.OPT_INDENT_2)
            sys.stdout.buffer.write(encoded + b"\n")
        else:
            print_tuned(tuned, str(out), whatif_command, _console())
    if rejected:
        err.print(
            f"{len(rejected)} of {len(lines) + len(rejected)} lines were bad and left out",
            markup=False,
            highlight=False,
        )


def _feature_json(value: object) -> object:
    """A tune feature (a named tuple, which orjson does not write) as an object."""
    from streams.offline.tune import Feature

    if isinstance(value, Feature):
        return {"table": value.table, "name": value.name, "label": value.label}
    raise TypeError(f"not JSON: {type(value).__name__}")


@app.command(short_help="Print realistic sample traffic as JSON lines.")
def generate(
    leads: Annotated[int, typer.Option(min=1, help="How many leads.")] = 1000,
    seed: Annotated[int, typer.Option(help="Same seed, same events.")] = 1,
    late_fraction: Annotated[
        float,
        typer.Option(min=0, max=1, help="Share of events delivered late, after later ones."),
    ] = TrafficShape.late_fraction,
    duplicate_fraction: Annotated[
        float,
        typer.Option(min=0, max=1, help="Share of events delivered twice (same event_id)."),
    ] = TrafficShape.duplicate_fraction,
    anonymous_browsing: Annotated[
        float,
        typer.Option(
            min=0,
            max=1,
            help="Share of the people who browse before their form who do it under an "
            "anonymous id, linked to them by the form (identity stitching).",
        ),
    ] = TrafficShape.anonymous_browsing,
    tune_truth: Annotated[
        bool,
        typer.Option(
            "--tune-truth",
            help="Traffic with a known truth for `leadflow tune`: webinars and case studies "
            "before the MQL make SQLs, page views and social engagement are noise, no_budget "
            "disqualifications are at companies under 20 employees (docs/rules.md).",
        ),
    ] = TrafficShape.tune_truth,
    spend: Annotated[
        Path | None,
        typer.Option(
            "--spend",
            dir_okay=False,
            help="Also write the paid campaigns' daily spend here, as the CSV `leadflow spend "
            "import` reads (same seed, same spend).",
        ),
    ] = None,
) -> None:
    """Print realistic sample traffic as JSON lines (buyers, tyre-kickers, students...).

    Anonymous visitors only with --anonymous-browsing above 0."""
    shape = TrafficShape(
        late_fraction=late_fraction,
        duplicate_fraction=duplicate_fraction,
        anonymous_browsing=anonymous_browsing,
        tune_truth=tune_truth,
    )
    _writable(spend, "--spend")
    out = sys.stdout.buffer
    written: list[dict[str, Any]] = []
    with _reader_may_stop():
        for event in generate_events(leads, seed, shape):
            out.write(orjson.dumps(event))
            out.write(b"\n")
            if spend is not None:
                written.append(event)
        out.flush()
    if spend is not None:
        from streams.common.spend import write_spend_csv
        from streams.local.spend_traffic import generate_spend

        with spend.open("w", encoding="utf-8", newline="") as handle:
            write_spend_csv(generate_spend(written, seed), handle)


@app.command(short_help="Run the whole pipeline locally on generated traffic.")
def demo(
    ctx: typer.Context,
    leads: Annotated[int, typer.Option(min=1, help="How many generated leads.")] = 2000,
    seed: Annotated[int, typer.Option(help="Same seed, same traffic.")] = 1,
    workdir: Annotated[Path, typer.Option(help="Logs and state of this run.")] = Path(
        ".leadflow/demo"
    ),
) -> None:
    """Run the whole pipeline locally on generated traffic, then stop everything it started."""
    from streams.local.demo import run_demo

    settings = _settings(ctx)
    if not run_demo(settings, _rules(None, settings), leads, seed, workdir, _console()):
        raise typer.Exit(1)


@app.command(short_help="Run a stream worker: events -> core -> stage changes.")
def worker(
    ctx: typer.Context,
    loglevel: Annotated[str, typer.Option(help="Faust log level.")] = "info",
    processes: Annotated[
        int,
        typer.Option(
            min=1,
            help="Worker processes on this machine, in one consumer group (one core each).",
        ),
    ] = 1,
    shadow: Annotated[bool, typer.Option("--shadow", hidden=True)] = False,
) -> None:
    """Run a stream worker: events -> core -> stage changes (creates missing topics first);
    with LEADFLOW_WORKER__CHALLENGER_RULES, a challenger process beside it."""
    from streams.common.kafka_clients import create_topics

    settings = _settings(ctx)
    rules = _rules(None, settings)
    challenger = settings.worker.challenger_rules
    if challenger is not None:
        load_rules(challenger)  # a broken challenger stops the start, not the shadow alone
    if processes == 1 and challenger is None and not shadow:
        from streams.worker.preflight import check_web_port

        # A port in use fails before the broker is asked for anything.
        check_web_port(settings.worker.web_host, settings.worker.web_port)
    create_topics(settings)
    if processes > 1 or challenger is not None:
        from streams.worker.processes import run_processes

        raise typer.Exit(run_processes(settings, processes, loglevel))
    from streams.worker.app import create_app, run_worker

    run_worker(create_app(settings, rules, shadow=shadow), loglevel)


@topics_app.command("create")
def topics_create(ctx: typer.Context) -> None:
    """Create leadflow's topics that do not exist yet (partitions and configs from settings)."""
    from streams.common.kafka_clients import create_topics

    created = create_topics(_settings(ctx))
    typer.echo("created: " + (", ".join(created) if created else "nothing, all exist"))


@app.command(short_help="Validate a JSON-lines log and publish it to the events topic.")
def publish(ctx: typer.Context, events: EventsArgument) -> None:
    """Validate and publish a JSON-lines log to the events topic (keyed by lead_id, acks=all).

    Needs the broker (LEADFLOW_KAFKA__BOOTSTRAP_SERVERS) and the events topic
    (LEADFLOW_TOPICS__EVENTS; `leadflow topics create` or a worker creates it). Invalid lines are
    reported on stderr with their number and reason, and are not sent.
    """
    from streams.common.publish import publish_events

    settings = _settings(ctx)
    with _open_events(events) as handle:
        lines = [line for line in handle if line.strip()]
    report = publish_events(lines, settings)
    for position, reason in report.rejected:
        err.print(f"event {position + 1}: {reason}", markup=False, highlight=False)
    for position, reason in report.failed:
        err.print(f"event {position + 1}: not sent: {reason}", markup=False, highlight=False)
    err.print(
        f"published {report.sent} events to {settings.topics.events} "
        f"({len(report.rejected)} rejected)",
        highlight=False,
    )
    if report.failed:
        reasons = {reason for _, reason in report.failed}
        raise LeadflowError(
            f"{len(report.failed)} events not sent: {report.failed[0][1]}"
            + (" (and other reasons, above)" if len(reasons) > 1 else "")
        )
    _fail_without_valid_events(events, report.sent, len(report.rejected))


@app.command("import", short_help="Load your history: publish event files in event-time order.")
def import_command(
    ctx: typer.Context,
    files: Annotated[
        list[str],
        typer.Argument(
            metavar="FILE...", help="JSON-lines event files, in any line order; '-' reads stdin."
        ),
    ],
    checkpoint_dir: Annotated[
        Path,
        typer.Option(
            "--checkpoint-dir",
            help="Where an import records how far it got, to resume after an interruption.",
            file_okay=False,
        ),
    ] = Path(".leadflow/import"),
    restart: Annotated[
        bool,
        typer.Option("--restart", help="Ignore an earlier run's checkpoint; send everything."),
    ] = False,
    stop_after: Annotated[
        int | None,
        typer.Option(
            "--stop-after",
            hidden=True,
            min=1,
            help="For tests only: stop once this many events were acknowledged, as an "
            "interruption would.",
        ),
    ] = None,
    jobs: Annotated[
        int,
        typer.Option(
            "--jobs",
            min=0,
            metavar="N",
            help="Processes to validate the events in (0: one per core); the same events are "
            "sent in the same order for any number.",
        ),
    ] = 1,
) -> None:
    """Load a history (CRM and analytics exports) into the events topic: every file is
    validated, the valid events of all files are sorted together by event time and published
    in that order (keyed by lead_id, acks=all), each marked as history so that nothing alerts
    on it. The stage changes and the funnel then equal `leadflow replay` of the same files.

    Invalid lines are reported on stderr as FILE:LINE: reason and are not sent. An interrupted
    import, run again with the same files, resumes after the events the broker acknowledged.
    Needs the broker (LEADFLOW_KAFKA__BOOTSTRAP_SERVERS) and the events topic."""
    from streams.importer import describe, import_history
    from streams.offline.replay import jobs_wanted

    settings = _settings(ctx)

    def report_bad(bad: Any) -> None:
        err.print(f"{bad.origin.source}:{bad.origin.line}: {bad.reason}", markup=False)

    def say(line: str) -> None:
        err.print(line, markup=False, highlight=False)

    try:
        done = import_history(
            files,
            settings,
            report_bad,
            checkpoint_dir,
            restart,
            stop_after,
            say=say,
            jobs=jobs_wanted(jobs),
        )
    except KeyboardInterrupt:
        raise LeadflowError(
            "import interrupted: run the same command again to resume after the events "
            "the broker acknowledged"
        ) from None
    for line in describe(done, settings.topics.events):
        say(line)
    if done.stopped_early:
        say(f"stopped after {done.sent} events (--stop-after); run again to send the rest")
    if done.events == 0:
        _fail_without_valid_events(", ".join(files), 0, done.rejected)


@spend_app.command("import")
def spend_import(
    ctx: typer.Context,
    file: Annotated[str, typer.Argument(metavar="FILE.csv", help="An ad platform's spend export.")],
    date_column: Annotated[str, typer.Option(help="The column of the day (2026-03-01).")] = "date",
    source_column: Annotated[str, typer.Option(help="The column of the source.")] = "source",
    campaign_column: Annotated[str, typer.Option(help="The column of the campaign.")] = "campaign",
    cost_column: Annotated[str, typer.Option(help="The column of the amount spent.")] = "cost",
    currency_column: Annotated[
        str, typer.Option(help="The column of the ISO 4217 currency.")
    ] = "currency",
) -> None:
    """Load campaign spend from CSV into the spend topic (LEADFLOW_TOPICS__SPEND), keyed by its
    spend id: loading the same rows again replaces them, never counts them twice.

    Every line is validated; a bad one is reported on stderr as FILE:LINE: reason and nothing of
    the file is sent. Needs the broker (LEADFLOW_KAFKA__BOOTSTRAP_SERVERS) and the spend topic
    (`leadflow topics create`)."""
    from streams.common.kafka_clients import require_topics
    from streams.common.spend import open_spend_csv, publish_spend, read_spend_csv

    settings = _settings(ctx)
    columns = {
        "day": date_column,
        "source": source_column,
        "campaign": campaign_column,
        "amount": cost_column,
        "currency": currency_column,
    }
    with open_spend_csv(file) as handle:
        rows = read_spend_csv(handle, file, columns)
    for bad in rows.bad:
        err.print(f"{file}:{bad.line}: {bad.reason}", markup=False, highlight=False)
    if rows.bad:
        raise LeadflowError(f"{len(rows.bad)} bad lines in {file}: nothing was sent; fix them")
    if not rows.records:
        raise LeadflowError(f"{file} holds no spend record")
    require_topics(settings, [settings.topics.spend])
    done = publish_spend(rows.records, settings)
    for line, reason in done.failed:
        err.print(f"{file}:{line}: not sent: {reason}", markup=False, highlight=False)
    err.print(f"published {done.sent} spend records to {settings.topics.spend}", highlight=False)
    if done.failed:
        raise LeadflowError(
            f"{len(done.failed)} spend records not sent: run the same command again "
            "(records sent twice replace each other)"
        )


@app.command(short_help="Run the local Kafka-protocol broker in the foreground.")
def broker(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1; 0 picks a free one.")] = 9092,
) -> None:
    """Run the local Kafka-protocol broker (Tansu, memory only) in the foreground."""
    import signal

    from streams.local.broker import LocalBroker

    stopping = {signal.SIGINT, signal.SIGTERM}
    # sigwait only receives signals that are blocked: unblocked, SIGTERM would end this process
    # at once and leave the broker it started running.
    signal.pthread_sigmask(signal.SIG_BLOCK, stopping)
    with LocalBroker(port=port or None) as local:
        typer.echo(f"broker ready: LEADFLOW_KAFKA__BOOTSTRAP_SERVERS={local.bootstrap_servers}")
        local.wait_for_signal(stopping)


def _clickhouse(settings: Settings) -> Any:
    from projections.clickhouse import connect, spool_inserts_into

    spool_inserts_into(settings.projector.temp_dir)
    return connect(settings.clickhouse)


@app.command(short_help="Create or update the funnel tables and views in ClickHouse.")
def migrate(ctx: typer.Context) -> None:
    """Create or update the funnel tables and views in ClickHouse (idempotent)."""
    from projections.clickhouse import migrate as apply_migrations

    settings = _settings(ctx)
    applied = apply_migrations(_clickhouse(settings), settings.clickhouse.database)
    typer.echo("applied: " + (", ".join(applied) if applied else "nothing, up to date"))


@app.command(short_help="Project the topics into ClickHouse (the funnel views).")
def project(
    ctx: typer.Context,
    until_caught_up: Annotated[
        bool, typer.Option(help="Stop once its topics are read to their end.")
    ] = False,
) -> None:
    """Project stage changes, events and accounts into ClickHouse, committing after each insert.

    Needs the broker (LEADFLOW_KAFKA__BOOTSTRAP_SERVERS), ClickHouse (LEADFLOW_CLICKHOUSE__URL;
    default: the embedded engine under .leadflow/clickhouse) and a key that hashes lead ids
    (LEADFLOW_PRIVACY__HASH_KEY; or LEADFLOW_PRIVACY__CLEAR_IDENTIFIERS=true). Runs `migrate`
    first. SIGTERM or Ctrl-C: what was read is written and committed, then it exits 0."""
    import logging
    import signal
    import threading

    from prometheus_client import start_http_server

    from projections.clickhouse import migrate as apply_migrations
    from projections.projector import Projector, ProjectorMetrics
    from streams.common.logs import quiet_client_repeats

    # A stop asked for while ClickHouse opens is honoured as soon as the run begins.
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    quiet_client_repeats(logging.getLogger())
    settings = _settings(ctx)
    client = _clickhouse(settings)
    apply_migrations(client, settings.clickhouse.database)
    metrics = ProjectorMetrics()
    if settings.projector.metrics_port is not None:
        start_http_server(settings.projector.metrics_port, registry=metrics.registry)
    err.print(f"projecting into {settings.clickhouse.database} at {settings.clickhouse.url}")
    stats = Projector(settings, client, metrics).run(stop, until_caught_up=until_caught_up)
    err.print(
        f"projected {stats.stage_changes} stage changes, {stats.events} events, "
        f"{stats.account_changes} account changes, {stats.account_signals} account signals, "
        f"{stats.handoff_events} handoff events and {stats.spend} spend records in "
        f"{stats.batches} batches "
        f"({stats.clock_records} clock records, {stats.dead_letters} unreadable messages)",
        highlight=False,
    )


@app.command(short_help="Serve the tracking API and the CRM webhook (HTTP).")
def collect(ctx: typer.Context) -> None:
    """Serve the Segment-compatible tracking API and the CRM webhook (LEADFLOW_COLLECTOR__*).

    Needs the broker (LEADFLOW_KAFKA__BOOTSTRAP_SERVERS; missing topics are created), the
    trackers' write keys (LEADFLOW_COLLECTOR__WRITE_KEYS, a JSON list) and, for the CRM webhook,
    its signing key (LEADFLOW_COLLECTOR__WEBHOOK_SECRET). Listens on LEADFLOW_COLLECTOR__HOST
    and __PORT (default 127.0.0.1:8088)."""
    import asyncio
    import logging

    from streams.collector.server import check_can_start, run_collector
    from streams.common.kafka_clients import create_topics

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    settings = _settings(ctx)
    check_can_start(settings)  # before the broker is asked for anything
    create_topics(settings)
    asyncio.run(run_collector(settings, _rules(None, settings)))


@app.command(short_help="Deliver new MQLs and handoff events to webhooks.")
def notify(ctx: typer.Context) -> None:
    """Deliver new MQLs and handoff events to webhooks (LEADFLOW_NOTIFY__*), signed, at least
    once, in order per lead and webhook; what a webhook never takes goes to the dead letters.

    Needs the broker (LEADFLOW_KAFKA__BOOTSTRAP_SERVERS; missing topics are created), the
    webhooks (LEADFLOW_NOTIFY__URLS, a JSON list, or LEADFLOW_NOTIFY__ENDPOINTS by kind) and
    the signing key (LEADFLOW_NOTIFY__SECRET). History-marked records never alert. SIGTERM or
    Ctrl-C: the offsets of what was delivered are committed, then it exits 0."""
    import asyncio
    import logging

    from prometheus_client import start_http_server

    from streams.common.kafka_clients import create_topics
    from streams.notify.metrics import NotifyMetrics
    from streams.notify.notifier import check_can_start, run_notifier

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    for client in ("kafka", "aiokafka"):  # their connection chatter, not the deliveries
        logging.getLogger(client).setLevel(logging.WARNING)
    settings = _settings(ctx)
    check_can_start(settings)  # before the broker is asked for anything
    metrics = NotifyMetrics()
    if settings.notify.metrics_port is not None:
        try:
            start_http_server(settings.notify.metrics_port, registry=metrics.registry)
        except OSError as exc:
            raise LeadflowError(
                f"cannot serve /metrics on port {settings.notify.metrics_port} "
                f"(LEADFLOW_NOTIFY__METRICS_PORT): {exc.strerror or exc}"
            ) from None
    create_topics(settings)
    asyncio.run(run_notifier(settings, metrics))


@app.command(short_help="Empty the projections and project the topics again.")
def rebuild(ctx: typer.Context) -> None:
    """Empty the funnel tables and project their topics again from the first offset.

    Needs the broker (LEADFLOW_KAFKA__BOOTSTRAP_SERVERS) with the topics the projector reads,
    and ClickHouse (LEADFLOW_CLICKHOUSE__URL); stop the projector first. Nothing is emptied
    until the broker has answered with the topics' partitions. The result equals the live
    projection."""
    from rich.progress import Progress

    from projections.clickhouse import migrate as apply_migrations
    from projections.projector import Projector, ProjectorStats
    from projections.writer import ProjectionWriter
    from streams.common.kafka_clients import require_topics

    settings = _settings(ctx)
    topics = settings.topics
    # Before anything is touched: the topics the projections come from must be there.
    require_topics(
        settings,
        [topics.stage_changes, topics.events, topics.account_changes, topics.account_signals],
    )
    client = _clickhouse(settings)
    database = settings.clickhouse.database
    apply_migrations(client, database)
    projector = Projector(settings, client, from_beginning=True)
    emptied = False

    def empty_once_the_topics_answer(partitions: set[Any]) -> None:
        nonlocal emptied
        if not partitions:
            raise LeadflowError(
                f"none of the topics {', '.join(projector.topics)} exists on "
                f"{settings.kafka.bootstrap_servers}: nothing to rebuild from; the projections "
                "were left as they were"
            )
        ProjectionWriter(client, database).truncate()
        emptied = True

    with Progress(console=err, transient=False) as progress:
        task = progress.add_task("rebuilding", total=None)

        def advance(stats: ProjectorStats) -> None:
            progress.update(task, completed=stats.records)

        try:
            stats = projector.run(
                until_caught_up=True, on_batch=advance, on_assigned=empty_once_the_topics_answer
            )
        except Exception as exc:
            if not emptied:
                raise
            progress.stop()
            raise LeadflowError(
                f"rebuild stopped after it emptied the projections of {database} "
                f"({projector.stats.records} records projected again): {exc}; "
                "run `leadflow rebuild` again once that is fixed"
            ) from exc
    err.print(
        f"rebuilt from {stats.stage_changes} stage changes, {stats.events} events, "
        f"{stats.account_changes} account changes, {stats.account_signals} account signals, "
        f"{stats.handoff_events} handoff events and {stats.spend} spend records",
        highlight=False,
    )


@app.command(short_help="The funnel report from ClickHouse (terminal, HTML or JSON).")
def report(
    ctx: typer.Context,
    html: Annotated[
        Path | None,
        typer.Option("--html", help="Also write a one-page HTML report here.", dir_okay=False),
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print the report's views as JSON instead (the per-lead and per-change views, "
            "such as lead_status, are in ClickHouse).",
        ),
    ] = False,
) -> None:
    """The funnel report from ClickHouse: stages, conversion, time to convert, bottlenecks.

    Needs what `leadflow project` wrote into LEADFLOW_CLICKHOUSE__URL (default: the embedded
    engine under .leadflow/clickhouse), database LEADFLOW_CLICKHOUSE__DATABASE.
    """
    from projections.clickhouse import missing_views
    from projections.report import REPORT_VIEWS, print_report, read_funnel, write_html

    settings = _settings(ctx)
    _writable(html, "--html")
    client = _clickhouse(settings)
    database = settings.clickhouse.database
    missing = missing_views(client, database, REPORT_VIEWS)
    if len(missing) == len(REPORT_VIEWS):
        raise LeadflowError(
            f"nothing was projected into {database} at {settings.clickhouse.url} yet: run "
            "`leadflow project --until-caught-up` first (LEADFLOW_CLICKHOUSE__URL and "
            "__DATABASE say where)"
        )
    if missing:
        raise LeadflowError(
            f"{database} lacks the views {', '.join(missing)}: run `leadflow migrate` "
            "(or `leadflow project`) with this version first"
        )
    metrics = read_funnel(client, database, REPORT_VIEWS)
    with _reader_may_stop():
        if as_json:
            sys.stdout.buffer.write(orjson.dumps(metrics, option=orjson.OPT_INDENT_2) + b"\n")
        else:
            print_report(metrics, _console())
    if html is not None:
        write_html(metrics, html)
        err.print(f"wrote {html}", markup=False, highlight=False)


@schemas_app.command("export")
def schemas_export(
    directory: Annotated[
        Path, typer.Argument(file_okay=False, help="Where to write *.schema.json.")
    ],
) -> None:
    """Write the JSON Schema of every event model, for upstream teams to validate against."""
    from schemas.export import export_json_schemas

    for path in export_json_schemas(directory):
        typer.echo(str(path))


@rules_app.command("show")
def rules_show(ctx: typer.Context, rules: RulesOption = None) -> None:
    """Validate the rules in force and print them as JSON (with their version)."""
    loaded = _rules(rules, _settings(ctx))
    document = loaded.model_dump(mode="json")
    document["rules_version"] = loaded.rules_version
    typer.echo(orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_UTC_Z).decode())


@app.command("settings", short_help="Print every LEADFLOW_* setting with its default and meaning.")
def settings_command() -> None:
    """Print every setting: its LEADFLOW_* variable, default and meaning (docs/settings.md)."""
    typer.echo(settings_reference(), nl=False)
