"""The webmail: a WSGI application over IMAP and SMTP submission.

The browser is the mail client's screen; the IMAP server keeps the mail,
the submission server sends it, and the webmail holds nothing but
sessions.  It runs under any WSGI server (`webmail`, with waitress) or as
a CGI program (`webmail.cgi`), and never touches a spool or a queue, so
it works the same against our imapd or any other IMAP server.

Routes are a table: path and method, the handler, and whether it needs a
session.  Every POST is a state change and must carry the session's CSRF
token (the login form: a token doubled in a cookie) and, when the browser
says where it comes from, an Origin of this site.  The session cookie is
HttpOnly, SameSite=Strict, Secure over HTTPS.  Pages are Jinja2 templates
with autoescaping on; the one piece of markup from a message, its HTML
body, is sanitised by nh3 first (message_view.py).
"""

import contextlib
import os
import secrets
import sys
import time
import traceback

import jinja2

from ..core import hostport, log, mutf7
from ..trace import hops as tracer
from ..trace import render as trace_render
from . import compose, connections, listing, message_view, sessions
from .http import BadRequest, Request, Response, attachment_disposition, safe_filename
from .imap_client import ImapError, LoginFailed, MailClient

HERE = os.path.dirname(os.path.abspath(__file__))
SESSION_COOKIE = "webmail_session"
LOGIN_COOKIE = "webmail_login"
COUNTS_MAX_AGE = 60                      # seconds before unread counts are refreshed (after a response)
INLINE_IMAGES = {"image/png", "image/jpeg", "image/gif", "image/webp"}
NOTICES = {"sent": "Message sent.", "moved": "Moved.", "deleted": "Deleted.", "updated": "Updated.",
           "loggedout": "You have logged out.", "expired": "Your session has ended; please log in again."}


class Application:
    def __init__(self, cfg, *, pooled=True, logger=None):
        self.cfg = cfg
        self.settings = cfg.webmail
        self.logger = logger or log.setup(cfg, "webmail")
        path = self.settings.session_db or os.path.join(cfg.mailsuite.state_dir, "webmail.sqlite")
        self.store = sessions.Store(path, idle=self.settings.session_idle, lifetime=self.settings.session_lifetime,
                                    max_failures=self.settings.max_login_failures,
                                    failure_window=self.settings.failure_window)
        self.pool = connections.Pool() if pooled else connections.NoPool()
        self.orders = listing.OrderCache()
        self.templates = jinja2.Environment(loader=jinja2.FileSystemLoader(os.path.join(HERE, "templates")),
                                            autoescape=True, trim_blocks=True, lstrip_blocks=True)
        self.templates.filters["size"] = _human_size
        self.imap_address = hostport.parse(self.settings.imap_server, 143, key="[webmail] imap_server")
        self.smtp_address = hostport.parse(self.settings.smtp_server, 587, key="[webmail] smtp_server")

    # --- WSGI ---

    def __call__(self, environ, start_response):
        request = None
        try:
            request = Request(environ, self.settings.max_upload)
            response = self.dispatch(request)
        except BadRequest as exc:
            response = self.page(request, "error.html", status=exc.status, message=str(exc))
        except Exception:
            self.logger.error("webmail: internal error: %s", traceback.format_exc().replace("\n", " | "))
            response = Response("Internal error; it has been logged.", 500, "text/plain; charset=utf-8")
        return response.wsgi(start_response)

    def dispatch(self, request):
        methods = ROUTES.get(request.path)
        if methods is None:
            return self.page(request, "error.html", status=404, message="No such page.")
        handler = methods.get(request.method)
        if handler is None:
            return self.page(request, "error.html", status=405, message="Method not allowed.")
        if request.method == "POST" and not request.origin_ok():
            return self.page(request, "error.html", status=403, message="Refused: the form came from another site.")
        if handler in WITHOUT_SESSION:
            return handler(self, request)
        session = self.store.load(request.cookies.get(SESSION_COOKIE, ""))
        if session is None:
            if request.method == "POST":
                return self.page(request, "error.html", status=403,
                                 message="Refused: no session (log in, then try again).")
            return Response.redirect(request.url("/login", notice="expired" if SESSION_COOKIE in request.cookies
                                                 else None))
        if request.method == "POST" and not sessions.same(request.form.get("csrf", ""), session.csrf):
            return self.page(request, "error.html", status=403, message="Refused: the form's token is missing or stale.")
        try:
            return handler(self, request, session)
        except ImapError as exc:
            self.pool.discard(session.key)
            return self.page(request, "error.html", status=502, session=session, message=f"IMAP: {exc}")

    # --- helpers ---

    def page(self, request, template, *, status=200, session=None, **context):
        template = self.templates.get_template(template)
        url = request.url if request else (lambda path, **q: path)
        body = template.render(url=url, session=session, csrf=session.csrf if session else "",
                               notice=NOTICES.get(request.query.get("notice", "")) if request else None,
                               **context)
        return Response(body, status)

    def connect(self, session):
        def login():
            client = self._client()
            try:
                client.login(session.user, session.password)
            except ImapError:
                client.logout()
                raise
            return client
        return self.pool.client(session.key, login)

    def _client(self):
        host, port = self.imap_address
        return MailClient(host, port, security=self.settings.imap_security, ca_file=self.settings.ca_file)

    def address_of(self, user):
        if "@" in user:
            return user
        domain = self.settings.from_domain or self.cfg.mail.from_domain or self.cfg.hostname
        return f"{user}@{domain}"

    def folders(self, session, client, response_after):
        """[(name, shown, messages, unseen)]: the cached counts, refreshed after the response when old."""
        counts = session.data.get("counts")
        if counts is None:
            counts = self._count(client)
            session.data["counts"] = counts
            self.store.save_data(session)
        elif time.time() - counts["at"] > COUNTS_MAX_AGE:
            response_after.append(lambda: self._refresh_counts(session))
        return counts["folders"]

    def _count(self, client):
        rows = []
        for name, shown, _ in client.folders():
            try:
                messages, unseen = client.status(name)
            except ImapError:
                messages, unseen = 0, 0
            rows.append([name, shown, messages, unseen])
        return {"at": time.time(), "folders": rows}

    def _refresh_counts(self, session):
        client = self._client()
        try:
            client.login(session.user, session.password)
            session.data["counts"] = self._count(client)
            self.store.save_data(session)
        finally:
            client.logout()

    def _one_less_unseen(self, session, folder):
        """The count shown drops at once when a message is opened; the server's comes at the next refresh."""
        for row in session.data.get("counts", {}).get("folders", []):
            if row[0] == folder and row[3] > 0:
                row[3] -= 1
                self.store.save_data(session)

    def counts_changed(self, session):
        if "counts" in session.data:
            session.data["counts"]["at"] = 0
            self.store.save_data(session)

    # --- handlers ---

    def static(self, request):
        name = os.path.basename(request.path)
        with open(os.path.join(HERE, "static", name), "rb") as f:
            response = Response(f.read(), 200, "text/css; charset=utf-8")
        return response

    def login_form(self, request, *, status=200, error=""):
        token = request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(24)
        response = self.page(request, "login.html", status=status, login_token=token, error=error,
                             user=request.form.get("user", ""))
        response.set_cookie(LOGIN_COOKIE, token, https=request.https, path=request.script)
        return response

    def login(self, request):
        user = request.form.get("user", "").strip()
        password = request.form.get("password", "")
        token = request.cookies.get(LOGIN_COOKIE, "")
        if not token or not sessions.same(request.form.get("csrf", ""), token):
            return self.page(request, "error.html", status=403, message="Refused: the login form's token is missing.")
        if not user or not password or len(user) > 256 or len(password) > sessions.MAX_PASSWORD:
            return self.login_form(request, status=400, error="Give a user name and a password.")
        if self.store.locked_out(user, request.remote):
            self.logger.warning("login: service=webmail, user=%s, rhost=%s, result=locked-out", user, request.remote)
            return self.login_form(request, status=429, error="Too many failed logins; try again later.")
        client = self._client()
        try:
            client.login(user, password)
        except LoginFailed:
            client.logout()
            self.store.record_failure(user, request.remote)
            self.logger.warning("login: service=webmail, user=%s, rhost=%s, result=failed", user, request.remote)
            time.sleep(self.settings.failure_delay)
            return self.login_form(request, status=403, error="Wrong user name or password.")
        except ImapError:
            client.logout()
            raise
        self.store.clear_failures(user)
        cookie, session = self.store.create(user, password)
        self.logger.info("login: service=webmail, user=%s, rhost=%s, result=ok", user, request.remote)
        try:
            session.data["counts"] = self._count(client)
            self.store.save_data(session)
        finally:
            self.pool.keep(session.key, client)
        response = Response.redirect(request.url("/mailbox"))
        response.set_cookie(SESSION_COOKIE, cookie, https=request.https, path=request.script)
        response.set_cookie(LOGIN_COOKIE, "", https=request.https, path=request.script, max_age=0)
        return response

    def logout(self, request, session):
        self.store.delete(session)
        self.pool.discard(session.key)
        response = Response.redirect(request.url("/login", notice="loggedout"))
        response.set_cookie(SESSION_COOKIE, "", https=request.https, path=request.script, max_age=0)
        return response

    def home(self, request, session):
        return Response.redirect(request.url("/mailbox"))

    def mailbox(self, request, session):
        folder = request.query.get("folder") or "INBOX"
        sort = request.query.get("sort", "date")
        sort = sort if sort in listing.SORTS else "date"
        descending = request.query.get("order", "desc") != "asc"
        query = request.query.get("q", "").strip()[:200]
        field = request.query.get("field", "text")
        field = field if field in listing.SEARCH_FIELDS else "text"
        number = _positive(request.query.get("page"))
        size = max(1, self.settings.page_size)
        after = []
        with self.connect(session) as client:
            folders = self.folders(session, client, after)
            selected = client.select(folder)
            items, total = listing.page(client, selected, user=session.user, sort=sort, descending=descending,
                                        number=number, size=size, query=query, field=field, cache=self.orders)
        pages = max(1, (total + size - 1) // size)
        response = self.page(request, "mailbox.html", session=session, folders=folders, folder=folder,
                             shown=mutf7.for_display(folder), items=items, total=total, number=number, pages=pages,
                             sort=sort, order="desc" if descending else "asc", query=query, field=field,
                             page_size=size)
        response.after = after
        return response

    def message(self, request, session):
        held = contextlib.ExitStack()              # the connection stays this request's until \\Seen is stored
        client = held.enter_context(self.connect(session))
        try:
            response = self._message(request, session, client)
        except BaseException:
            held.__exit__(*sys.exc_info())
            raise
        response.after.append(held.close)
        return response

    def _message(self, request, session, client):
        folder = request.query.get("folder") or "INBOX"
        uid = _positive(request.query.get("uid"))
        images = request.query.get("images") == "1"
        after = []
        folders = self.folders(session, client, after)
        client.select(folder)
        raw, flags = client.message_and_flags(uid)
        if raw is None:
            return self.page(request, "error.html", status=404, session=session,
                             message="That message is gone (moved or deleted meanwhile).")
        if "\\Seen" not in flags:
            # imapd's flag write-back takes ~0.3 s on a 100k mailbox: done once the page is sent
            after.append(lambda: client.set_flags([uid], ["\\Seen"]))
            self._one_less_unseen(session, folder)

        def part_url(index):
            return request.url("/part", folder=folder, uid=uid, part=index, inline=1)
        view = message_view.view(raw, images=images, part_url=part_url)
        trace = tracer.trace_message(raw)
        response = self.page(request, "message.html", session=session, folders=folders, folder=folder,
                             shown=mutf7.for_display(folder), uid=uid, view=view, images=images, trace=trace,
                             bars=trace_render.bars(trace), summary=trace_render.summary_lines(trace),
                             duration=trace_render.duration)
        response.remote_images = images
        response.after = after
        return response

    def part(self, request, session):
        folder = request.query.get("folder") or "INBOX"
        uid = _positive(request.query.get("uid"))
        index = _positive(request.query.get("part"), minimum=0)
        with self.connect(session) as client:
            client.select(folder)
            raw = client.message(uid)
        found = message_view.part(raw, index) if raw else None
        if found is None:
            return self.page(request, "error.html", status=404, session=session, message="No such attachment.")
        filename, kind, data = found
        response = Response(data, 200, kind if "/" in kind else "application/octet-stream")
        if request.query.get("inline") == "1" and kind in INLINE_IMAGES:
            response.headers.append(("Content-Disposition", f'inline; filename="{safe_filename(filename, "image")}"'))
        else:
            response.headers.append(("Content-Disposition", attachment_disposition(filename)))
        return response

    def compose_form(self, request, session, *, draft=None, error="", status=200):
        mode = request.query.get("mode", "new")
        folder = request.query.get("folder") or request.form.get("folder") or "INBOX"
        if draft is None:
            draft = compose.Draft(to=request.query.get("to", ""))
            if mode in ("reply", "replyall", "forward"):
                uid = _positive(request.query.get("uid"))
                with self.connect(session) as client:
                    client.select(folder)
                    raw = client.message(uid)
                if raw is None:
                    return self.page(request, "error.html", status=404, session=session, message="No such message.")
                me = self.address_of(session.user)
                draft = (compose.forward(raw, uid) if mode == "forward"
                         else compose.reply(raw, me, everyone=mode == "replyall"))
                draft.reply_uid = str(uid) if mode != "forward" else ""
        return self.page(request, "compose.html", status=status, session=session, draft=draft, folder=folder,
                         error=error, sender=self.address_of(session.user))

    def send(self, request, session):
        form = request.form
        draft = compose.Draft(to=form.get("to", ""), cc=form.get("cc", ""), bcc=form.get("bcc", ""),
                              subject=form.get("subject", ""), body=form.get("body", ""),
                              in_reply_to=form.get("in_reply_to", ""), references=form.get("references", ""),
                              forward_uid=form.get("forward_uid", ""), reply_uid=form.get("reply_uid", ""))
        folder = form.get("folder") or "INBOX"
        draft.attachments = [(safe_filename(name), kind, data) for field, name, kind, data in request.files
                             if field == "attachment" and name]
        to = compose.recipients(draft)
        if not to:
            return self.compose_form(request, session, draft=draft, status=400, error="Give at least one recipient.")
        sender = self.address_of(session.user)
        with self.connect(session) as client:
            forwarded = []
            if draft.forward_uid:
                client.select(folder)
                raw = client.message(_positive(draft.forward_uid))
                if raw:
                    view = message_view.view(raw)
                    for attachment in view.attachments:
                        found = message_view.part(raw, attachment.index)
                        if found:
                            forwarded.append((safe_filename(found[0]), found[1], found[2]))
            message = compose.build(draft, sender, sender.rpartition("@")[2], forwarded)
            host, port = self.smtp_address
            try:
                compose.submit(message, sender, to, host=host, port=port, security=self.settings.smtp_security,
                               ca_file=self.settings.ca_file, user=session.user, password=session.password)
            except compose.SendError as exc:
                return self.compose_form(request, session, draft=draft, status=502,
                                         error=f"Not sent: {exc}. Attachments must be chosen again.")
            self.logger.info("webmail: user=%s sent to=%s", session.user, ",".join(to))
            self._save_sent(client, message)
            if draft.reply_uid:
                client.select(folder)
                client.set_flags([_positive(draft.reply_uid)], ["\\Answered"])
        self.counts_changed(session)
        return Response.redirect(request.url("/mailbox", folder=folder, notice="sent"))

    def _save_sent(self, client, message):
        sent = self.settings.sent_folder
        if not sent:
            return False
        data = message.as_bytes()
        try:
            client.append(sent, data)
        except ImapError:
            try:
                client.create(sent)
                client.append(sent, data)
            except ImapError as exc:
                self.logger.warning("webmail: cannot save to %s: %s", sent, exc)
                return False
        return True

    def action(self, request, session):
        folder = request.form.get("folder") or "INBOX"
        operation = request.form.get("op", "")
        uids = sorted({_positive(u) for u in request.lists.get("uid", []) if u.isdigit()})
        back = self._back(request, folder)
        if not uids:
            return Response.redirect(back)
        with self.connect(session) as client:
            client.select(folder)
            if operation in ACTION_FLAGS:
                flag, add = ACTION_FLAGS[operation]
                client.set_flags(uids, [flag], add=add)
                notice = "updated"
            elif operation == "delete":
                trash = self.settings.trash_folder
                if not trash or folder == trash:
                    client.expunge(uids)
                else:
                    self._move(client, uids, trash)
                notice = "deleted"
                back = self._back(request, folder, to_mailbox=True)
            elif operation == "move":
                target = request.form.get("target", "")
                if not target or target == folder:
                    raise BadRequest(400, "Choose a folder to move to.")
                client.move(uids, target)
                notice = "moved"
                back = self._back(request, folder, to_mailbox=True)
            else:
                raise BadRequest(400, "Unknown action.")
        self.counts_changed(session)
        return Response.redirect(back + ("&" if "?" in back else "?") + f"notice={notice}")

    def _move(self, client, uids, target):
        try:
            client.move(uids, target)
        except ImapError:
            client.create(target)
            client.move(uids, target)

    def _back(self, request, folder, *, to_mailbox=False):
        """Where a form returns: one of our own pages, rebuilt from known fields (never a URL from the form)."""
        form = request.form
        if form.get("from_message") and not to_mailbox:
            return request.url("/message", folder=folder, uid=_positive(form.get("from_message")))
        return request.url("/mailbox", folder=folder, page=form.get("page") if (form.get("page") or "").isdigit() else None,
                           sort=form.get("sort") if form.get("sort") in listing.SORTS else None,
                           order="asc" if form.get("order") == "asc" else None,
                           q=(form.get("q") or "")[:200] or None,
                           field=form.get("field") if form.get("field") in listing.SEARCH_FIELDS else None)


WITHOUT_SESSION = (Application.login_form, Application.login, Application.static)

ACTION_FLAGS = {"read": ("\\Seen", True), "unread": ("\\Seen", False),
                "flag": ("\\Flagged", True), "unflag": ("\\Flagged", False)}

ROUTES = {
    "/": {"GET": Application.home},
    "/login": {"GET": Application.login_form, "POST": Application.login},
    "/logout": {"POST": Application.logout},
    "/mailbox": {"GET": Application.mailbox},
    "/message": {"GET": Application.message},
    "/part": {"GET": Application.part},
    "/compose": {"GET": Application.compose_form},
    "/send": {"POST": Application.send},
    "/action": {"POST": Application.action},
    "/static/style.css": {"GET": Application.static},
}


def _positive(text, minimum=1):
    try:
        return max(minimum, int(text))
    except (TypeError, ValueError):
        return minimum


def _human_size(size):
    for unit in ("B", "K", "M", "G"):
        if size < 1024 or unit == "G":
            return f"{size:.0f}{unit}" if unit == "B" or size >= 10 else f"{size:.1f}{unit}"
        size /= 1024
