"""The little of HTTP the webmail needs on top of WSGI: a request, a response, safe headers.

Every response carries the same defences: a Content-Security-Policy that
allows no script at all and styles only from our own file (so neither a
message's HTML nor an injected attribute can run or restyle anything),
no framing, referrers only within the site (a link in a message must not
tell its sender the webmail's URLs; "no-referrer" would also make
browsers send `Origin: null` on our own forms), nosniff, and no caching of pages that show mail.
"""

import email.parser
import email.policy
import http.cookies
import re
import urllib.parse

STATUS = {200: "200 OK", 302: "302 Found", 303: "303 See Other", 400: "400 Bad Request", 403: "403 Forbidden",
          404: "404 Not Found", 405: "405 Method Not Allowed", 413: "413 Payload Too Large",
          429: "429 Too Many Requests", 500: "500 Internal Server Error", 502: "502 Bad Gateway"}

CSP = ("default-src 'none'; style-src 'self'; img-src 'self' data:{images}; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")


class BadRequest(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


class Request:
    def __init__(self, environ, max_body):
        self.environ = environ
        self.method = environ.get("REQUEST_METHOD", "GET").upper()
        self.script = environ.get("SCRIPT_NAME", "").rstrip("/")
        self.path = environ.get("PATH_INFO", "") or "/"
        self.query = {k: v for k, v in urllib.parse.parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True)}
        self.remote = environ.get("REMOTE_ADDR", "")
        self.https = environ.get("wsgi.url_scheme") == "https" or environ.get("HTTPS", "").lower() in ("on", "1")
        cookies = http.cookies.SimpleCookie()
        try:
            cookies.load(environ.get("HTTP_COOKIE", ""))
        except http.cookies.CookieError:
            pass
        self.cookies = {k: m.value for k, m in cookies.items()}
        self.form, self.lists, self.files = {}, {}, []
        if self.method == "POST":
            self._read_body(max_body)

    def _read_body(self, max_body):
        try:
            length = int(self.environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            raise BadRequest(400, "bad Content-Length") from None
        if length > max_body:
            raise BadRequest(413, "the form is larger than the webmail accepts")
        body = self.environ["wsgi.input"].read(length) if length else b""
        kind = self.environ.get("CONTENT_TYPE", "")
        if kind.startswith("multipart/form-data"):
            self._multipart(kind, body)
        else:
            for key, value in urllib.parse.parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True):
                self._add(key, value)

    def _multipart(self, kind, body):
        """multipart/form-data read with the email package (the cgi module is gone from Python 3.13)."""
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            b"Content-Type: " + kind.encode("latin-1") + b"\r\n\r\n" + body)
        if not message.is_multipart():
            raise BadRequest(400, "bad multipart form")
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if name is None:
                continue
            filename = part.get_filename()
            payload = part.get_payload(decode=True) or b""
            if filename is not None:
                if payload or filename:
                    self.files.append((name, filename, part.get_content_type(), payload))
            else:
                charset = part.get_content_charset() or "utf-8"
                self._add(name, payload.decode(charset, "replace"))

    def _add(self, key, value):
        self.form.setdefault(key, value)
        self.lists.setdefault(key, []).append(value)

    def origin_ok(self):
        """A POST's Origin (or Referer), when the browser sends one, must be this site."""
        origin = self.environ.get("HTTP_ORIGIN") or ""
        if not origin:
            referer = self.environ.get("HTTP_REFERER") or ""
            if not referer:
                return True
            parts = urllib.parse.urlsplit(referer)
            origin = f"{parts.scheme}://{parts.netloc}"
        if origin == "null":
            return False
        host = self.environ.get("HTTP_HOST") or f"{self.environ.get('SERVER_NAME')}:{self.environ.get('SERVER_PORT')}"
        return urllib.parse.urlsplit(origin).netloc.lower() == host.lower()

    def url(self, path, **query):
        """A URL of this application (never another site's: no open redirect can be built from it)."""
        query = {k: v for k, v in query.items() if v not in (None, "")}
        return self.script + path + ("?" + urllib.parse.urlencode(query) if query else "")


class Response:
    def __init__(self, body=b"", status=200, content_type="text/html; charset=utf-8"):
        self.status = status
        self.body = body.encode("utf-8") if isinstance(body, str) else body
        self.headers = [("Content-Type", content_type)]
        self.remote_images = False
        self.after = []                      # work to do once the response is sent

    @classmethod
    def redirect(cls, location):
        response = cls(b"", 303)
        response.headers.append(("Location", location))
        return response

    def set_cookie(self, name, value, *, https, max_age=None, path="/"):
        attributes = [f"{name}={value}", f"Path={path or '/'}", "HttpOnly", "SameSite=Strict"]
        if https:
            attributes.append("Secure")
        if max_age is not None:
            attributes.append(f"Max-Age={int(max_age)}")
        self.headers.append(("Set-Cookie", "; ".join(attributes)))

    def wsgi(self, start_response):
        headers = list(self.headers) + [
            ("Content-Security-Policy", CSP.format(images=" https: http:" if self.remote_images else "")),
            ("X-Content-Type-Options", "nosniff"),
            ("X-Frame-Options", "DENY"),
            ("Referrer-Policy", "same-origin"),
            ("Cross-Origin-Opener-Policy", "same-origin"),
            ("Cache-Control", "no-store"),
            ("Content-Length", str(len(self.body))),
        ]
        start_response(STATUS.get(self.status, f"{self.status} Status"), headers)
        return _Body(self.body, self.after)


class _Body:
    """The response body, whose close() (called by the server once it is sent) runs deferred work."""

    def __init__(self, body, after):
        self.body, self.after = body, after

    def __iter__(self):
        yield self.body

    def close(self):
        for work in self.after:
            try:
                work()
            except Exception:            # deferred work (a count refresh) must never break the server
                pass


def safe_filename(name, fallback="attachment"):
    """A file name with no directory, control character or quote: what a download may be saved as."""
    name = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = re.sub(r'[\x00-\x1f\x7f"]', "", name).strip(" .")
    return name[:200] or fallback


def attachment_disposition(name):
    """Content-Disposition: attachment with an ASCII fallback and the UTF-8 name (RFC 6266)."""
    name = safe_filename(name)
    ascii_name = name.encode("ascii", "replace").decode().replace("?", "_")
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{urllib.parse.quote(name, safe='')}"
