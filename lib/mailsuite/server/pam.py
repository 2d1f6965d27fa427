"""Password checks through PAM, with ctypes against libpam (no extra package).

Only authentication and account management are used: a mail session needs
to know that the password is right and the account is usable (not expired,
not locked), nothing more.  The conversation answers every "echo off"
prompt with the password and every "echo on" prompt with the user name, the
way other non-interactive PAM clients (Dovecot, UW imapd) do.

PAM's own failure delay (pam_unix asks for about two seconds, longer for
some failures than others) is taken over with PAM_FAIL_DELAY, as login(1)
and sshd do: the caller applies one delay to every failure alike, so the
time a refusal takes tells nothing about why.
"""

import ctypes
import ctypes.util

PAM_PROMPT_ECHO_OFF = 1
PAM_PROMPT_ECHO_ON = 2
PAM_SUCCESS = 0
PAM_BUF_ERR = 5
PAM_CONV_ERR = 19
PAM_SILENT = 0x8000
PAM_DISALLOW_NULL_AUTHTOK = 0x0001
PAM_RHOST = 4
PAM_FAIL_DELAY = 10


class PamMessage(ctypes.Structure):
    _fields_ = [("msg_style", ctypes.c_int), ("msg", ctypes.c_char_p)]


class PamResponse(ctypes.Structure):
    _fields_ = [("resp", ctypes.c_void_p), ("resp_retcode", ctypes.c_int)]


CONV_FUNC = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.POINTER(ctypes.POINTER(PamMessage)),
                             ctypes.POINTER(ctypes.POINTER(PamResponse)), ctypes.c_void_p)


class PamConv(ctypes.Structure):
    _fields_ = [("conv", CONV_FUNC), ("appdata_ptr", ctypes.c_void_p)]


DELAY_FUNC = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_uint, ctypes.c_void_p)


@DELAY_FUNC
def _no_delay(_status, _microseconds, _appdata):
    """PAM calls this instead of sleeping after a failure; the caller does the waiting."""


_libs = {}


def _load():
    """libpam and libc, loaded once; None when this system has no PAM."""
    if not _libs:
        try:
            pam = ctypes.CDLL(ctypes.util.find_library("pam") or "libpam.so.0")
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        except OSError:
            return None
        libc.calloc.restype = ctypes.c_void_p
        libc.calloc.argtypes = [ctypes.c_size_t, ctypes.c_size_t]
        libc.strdup.restype = ctypes.c_void_p
        libc.strdup.argtypes = [ctypes.c_char_p]
        handle = ctypes.POINTER(ctypes.c_void_p)
        pam.pam_start.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.POINTER(PamConv),
                                  ctypes.POINTER(handle)]
        if hasattr(pam, "pam_start_confdir"):
            pam.pam_start_confdir.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.POINTER(PamConv),
                                              ctypes.c_char_p, ctypes.POINTER(handle)]
        pam.pam_set_item.argtypes = [handle, ctypes.c_int, ctypes.c_void_p]
        pam.pam_authenticate.argtypes = [handle, ctypes.c_int]
        pam.pam_acct_mgmt.argtypes = [handle, ctypes.c_int]
        pam.pam_end.argtypes = [handle, ctypes.c_int]
        pam.pam_strerror.argtypes = [handle, ctypes.c_int]
        pam.pam_strerror.restype = ctypes.c_char_p
        _libs.update(pam=pam, libc=libc, handle=handle)
    return _libs


def available():
    return _load() is not None


def authenticate(service, username, password, *, rhost=None, confdir=None):
    """(True, "") when PAM accepts USERNAME/PASSWORD for SERVICE, else (False, reason).

    CONFDIR replaces /etc/pam.d (Linux-PAM 1.4+), for tests.
    """
    libs = _load()
    if libs is None:
        return False, "PAM is not available"
    pam, libc = libs["pam"], libs["libc"]
    secret = password.encode("utf-8")
    login = username.encode("utf-8")

    @CONV_FUNC
    def conversation(count, messages, responses, _appdata):
        block = libc.calloc(count, ctypes.sizeof(PamResponse))
        if not block:
            return PAM_BUF_ERR
        replies = ctypes.cast(block, ctypes.POINTER(PamResponse))
        for i in range(count):
            style = messages[i].contents.msg_style
            if style == PAM_PROMPT_ECHO_OFF:
                replies[i].resp = libc.strdup(secret)
            elif style == PAM_PROMPT_ECHO_ON:
                replies[i].resp = libc.strdup(login)
        responses[0] = replies
        return PAM_SUCCESS

    conv = PamConv(conversation, None)
    handle = libs["handle"]()
    if confdir:
        status = pam.pam_start_confdir(service.encode(), login, ctypes.byref(conv),
                                       confdir.encode(), ctypes.byref(handle))
    else:
        status = pam.pam_start(service.encode(), login, ctypes.byref(conv), ctypes.byref(handle))
    if status != PAM_SUCCESS:
        return False, f"pam_start: status {status}"
    try:
        pam.pam_set_item(handle, PAM_FAIL_DELAY, ctypes.cast(_no_delay, ctypes.c_void_p))
        if rhost:
            pam.pam_set_item(handle, PAM_RHOST, ctypes.cast(ctypes.c_char_p(rhost.encode()), ctypes.c_void_p))
        status = pam.pam_authenticate(handle, PAM_SILENT | PAM_DISALLOW_NULL_AUTHTOK)
        if status == PAM_SUCCESS:
            status = pam.pam_acct_mgmt(handle, PAM_SILENT | PAM_DISALLOW_NULL_AUTHTOK)
        reason = "" if status == PAM_SUCCESS else pam.pam_strerror(handle, status).decode(errors="replace")
        return status == PAM_SUCCESS, reason
    finally:
        pam.pam_end(handle, status)
