"""Showing a Trace: the hop table and text timeline of `mailsuite trace`, the bars of the webmail.

Both pictures come from `bars()`: one bar per hop on a common time axis,
from the previous stamp to the hop's own, so the terminal and the browser
draw the same thing.  The slowest hop is marked; a hop with clock skew
(its stamp earlier than the previous one) gets no bar but a flag.
"""

import json

from .hops import organisation


def duration(seconds):
    """'0.4 s', '12 s', '3 min 5 s', '2 h 10 min', '1 d 3 h'; negative values keep their sign."""
    if seconds is None:
        return "?"
    sign, seconds = ("-" if seconds < 0 else ""), abs(seconds)
    if seconds < 10:
        text = f"{seconds:.1f} s".replace(".0 s", " s")
    elif seconds < 60:
        text = f"{seconds:.0f} s"
    elif seconds < 3600:
        text = f"{int(seconds // 60)} min {int(seconds % 60)} s"
    elif seconds < 86400:
        text = f"{int(seconds // 3600)} h {int(seconds % 3600 // 60)} min"
    else:
        text = f"{int(seconds // 86400)} d {int(seconds % 86400 // 3600)} h"
    return sign + text


def bars(trace):
    """[(hop, start, width)] with START and WIDTH as fractions of the whole path (0..1), or None for no bar.

    The axis runs from Date: (or the first stamp) to the last stamp.
    """
    stamps = [h.time for h in trace.hops if h.time]
    origin = trace.date if trace.date and stamps else (stamps[0] if stamps else None)
    end = max(stamps, default=None)
    span = (end - origin).total_seconds() if origin and end else 0
    out = []
    for hop in trace.hops:
        if hop.delay is None or hop.skew or span <= 0:
            out.append((hop, None, None))
            continue
        start = ((hop.time - origin).total_seconds() - hop.delay) / span
        out.append((hop, max(0.0, start), max(0.0, hop.delay / span)))
    return out


def summary_lines(trace):
    """The conclusions: total, slowest hop and who held it, clock skew."""
    lines = []
    total = trace.total
    lines.append(f"total: {duration(total)} from Date: to the last hop" if total is not None
                 else "total: unknown (no Date: or no dated hop)")
    slowest = trace.slowest
    if slowest is not None and slowest.delay > 0:
        holder = trace.holder(slowest)
        lines.append(f"slowest hop: #{slowest.index} ({duration(slowest.delay)}), "
                     f"the message waited at {holder} (run by {organisation(holder)})")
    for hop in trace.hops:
        if hop.skew:
            lines.append(f"clock skew: hop #{hop.index} ({hop.by_host or '?'}) is stamped {duration(-hop.delay)} "
                         f"before the hop before it")
    for hop in trace.hops:
        if not hop.parsed:
            lines.append(f"unparsed: hop #{hop.index}: {hop.problem}")
    return lines


def text(trace, width=40):
    """What `mailsuite trace` prints: the hops, a timeline, the conclusions."""
    out = []
    if trace.return_path:
        out.append(f"Return-Path: {trace.return_path}")
    out.append(f"Date: {trace.date_text or '(none)'}")
    out.append("")
    for hop in trace.hops:
        out.append(f"#{hop.index}  {_when(hop)}  delay {duration(hop.delay)}{'  CLOCK SKEW' if hop.skew else ''}")
        if not hop.parsed:
            out.append(f"    UNPARSED ({hop.problem}): {hop.text}")
            continue
        source = hop.from_host + (f" ({hop.from_name} [{hop.from_ip}])" if hop.from_name and hop.from_ip
                                  else f" [{hop.from_ip}]" if hop.from_ip and hop.from_ip != hop.from_host else "")
        out.append(f"    from {source.strip() or '-'}")
        out.append(f"    by   {hop.by_host or '-'}" + (f" ({hop.mta or hop.software})" if hop.mta or hop.software else ""))
        details = [f"with {hop.protocol}" if hop.protocol else "", f"tls {hop.tls}" if hop.tls else "no tls",
                   f"id {hop.id}" if hop.id else "", f"for {hop.recipient}" if hop.recipient else ""]
        out.append("    " + ", ".join(d for d in details if d))
        if hop.problem:
            out.append(f"    note: {hop.problem}")
    out.append("")
    out.append("timeline:")
    slowest = trace.slowest
    name_width = min(24, max([len(_label(h)) for h in trace.hops] + [4]))
    for hop, start, size in bars(trace):
        label = _label(hop)[:name_width].ljust(name_width)
        if start is None:
            row = " " * width
            mark = "clock skew" if hop.skew else "no time"
        else:
            first = min(width - 1, int(start * width))
            cells = max(1, round(size * width))
            row = (" " * first + "#" * cells)[:width].ljust(width)
            mark = duration(hop.delay) + ("  <- slowest" if hop is slowest and hop.delay > 0 else "")
        out.append(f"  #{hop.index:<2} {label} |{row}| {mark}")
    out.append("")
    out += summary_lines(trace)
    return "\n".join(out) + "\n"


def _label(hop):
    return hop.by_host or hop.mta or "?"


def _when(hop):
    return hop.time.strftime("%Y-%m-%d %H:%M:%S %z") if hop.time else "(no date)"


def as_json(trace):
    return json.dumps(trace.as_dict(), indent=2) + "\n"
