"""A message as the webmail shows it: decoded headers, one body, the attachments.

HTML mail is cleaned by nh3 (the Rust ammonia sanitiser): an allow-list of
tags and attributes, no script, no style (element or attribute), no event
handler, no form, URLs only http, https and mailto, every link
rel="noopener noreferrer nofollow".  Hand-written sanitisers lose to the
parser differentials of real HTML; ammonia parses with html5ever, the
parser browsers follow.  Remote images are dropped until the reader asks
for them (a remote image tells the sender when, where and that the mail
was read); `cid:` images of the message itself are served from the
webmail.  The Content-Security-Policy stays the last line of defence.
"""

import email
import email.policy
from dataclasses import dataclass, field

import nh3

TAGS = {
    "a", "abbr", "b", "blockquote", "br", "caption", "center", "code", "dd", "del", "div", "dl", "dt", "em",
    "font", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "img", "ins", "kbd", "li", "ol", "p", "pre", "q",
    "s", "small", "span", "strike", "strong", "sub", "sup", "table", "tbody", "td", "tfoot", "th", "thead",
    "tr", "tt", "u", "ul",
}
ATTRIBUTES = {
    "*": {"title", "lang", "dir", "align"},
    "a": {"href"},
    "img": {"src", "alt", "width", "height"},
    "td": {"colspan", "rowspan", "valign"},
    "th": {"colspan", "rowspan", "valign"},
    "ol": {"start"},
    "font": {"color", "size"},
}


@dataclass
class Attachment:
    index: int                       # the part's place in a walk() of the message: its address for download
    filename: str
    content_type: str
    size: int
    content_id: str = ""


@dataclass
class View:
    subject: str = ""
    sender: str = ""
    to: str = ""
    cc: str = ""
    date: str = ""
    reply_to: str = ""
    message_id: str = ""
    text: str = ""                   # shown escaped, as preformatted text
    html: str = ""                   # already sanitised: the one string a template may mark safe
    blocked_images: int = 0
    attachments: list = field(default_factory=list)


def parse(raw):
    return email.message_from_bytes(raw, policy=email.policy.default)


def header(message, name):
    try:
        return str(message.get(name, "") or "")
    except (ValueError, TypeError, IndexError):      # an unreadable encoded word: the raw text
        return str(message.get_all(name, [""])[0])


def view(raw, *, images=False, part_url=None):
    """The View of RAW; IMAGES loads remote images; PART_URL(index) links a cid: image to its part."""
    message = parse(raw)
    result = View(subject=header(message, "Subject"), sender=header(message, "From"), to=header(message, "To"),
                  cc=header(message, "Cc"), date=header(message, "Date"), reply_to=header(message, "Reply-To"),
                  message_id=header(message, "Message-ID"))
    body_html, body_text = None, None
    content_ids = {}
    for index, part in enumerate(message.walk()):
        if part.is_multipart():
            continue
        kind = part.get_content_type()
        disposition = part.get_content_disposition()
        filename = part.get_filename()
        if disposition != "attachment" and not filename:
            if kind == "text/html" and body_html is None:
                body_html = _text_of(part)
                continue
            if kind == "text/plain" and body_text is None:
                body_text = _text_of(part)
                continue
        if kind == "message/rfc822" or disposition == "attachment" or filename or not kind.startswith("text/"):
            payload = _payload(part)
            cid = (part.get("Content-ID") or "").strip().strip("<>")
            result.attachments.append(Attachment(index, filename or _default_name(kind, index), kind,
                                                 len(payload), cid))
            if cid:
                content_ids[cid] = index
    if body_html is not None:
        result.html, result.blocked_images = sanitise(body_html, images=images, content_ids=content_ids,
                                                      part_url=part_url)
    else:
        result.text = body_text or ""
    return result


def _payload(part):
    if part.get_content_type() == "message/rfc822":
        return part.as_bytes()
    try:
        return part.get_payload(decode=True) or b""
    except (ValueError, TypeError):
        return b""


def _text_of(part):
    payload = _payload(part)
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload.decode(charset, "replace")
    except LookupError:                              # an unknown charset name
        return payload.decode("utf-8", "replace")


def _default_name(kind, index):
    extension = {"message/rfc822": "eml", "text/plain": "txt", "text/html": "html"}.get(kind, "bin")
    return f"part-{index}.{extension}"


def sanitise(html, *, images=False, content_ids=None, part_url=None):
    """(clean HTML, number of remote images dropped)."""
    blocked = []
    content_ids = content_ids or {}

    def attribute(tag, name, value):
        if tag == "img" and name == "src":
            lowered = value.strip().lower()
            if lowered.startswith("cid:") and part_url:
                index = content_ids.get(value.strip()[4:].strip("<>"))
                return part_url(index) if index is not None else None
            if lowered.startswith(("http:", "https:", "//")):
                if images:
                    return value
                blocked.append(value)
                return None
            return None                                  # data:, javascript: and the rest
        return value

    clean = nh3.clean(html, tags=TAGS, attributes=ATTRIBUTES, url_schemes={"http", "https", "mailto", "cid"},
                      link_rel="noopener noreferrer nofollow", strip_comments=True, attribute_filter=attribute,
                      clean_content_tags={"script", "style", "noscript", "template", "textarea", "title"})
    return clean, len(blocked)


def part(raw, index):
    """(filename, content type, bytes) of part INDEX of RAW (as numbered by view()), or None."""
    message = parse(raw)
    for number, candidate in enumerate(message.walk()):
        if number == index and not candidate.is_multipart():
            kind = candidate.get_content_type()
            return candidate.get_filename() or _default_name(kind, index), kind, _payload(candidate)
    return None


def quoted_body(raw):
    """The body as text for a reply or a forward (HTML reduced to its text)."""
    v = view(raw)
    if v.text:
        return v.text
    return nh3.clean(v.html, tags=set()).replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")
