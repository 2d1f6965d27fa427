# Errors: each gets BAD or NO with a reason, and the session goes on.
C: d1 FETCH 1 FLAGS
C: d2 SELECT Nonexistent
C: d3 SELECT INBOX
C: d4 FETCH 3 FLAGS
C: d5 FETCH 1 (FLAGS
C: d6 COPY 1 Nonexistent
C: d7 SEARCH CHARSET KOI8-R ALL
C: d8 CREATE ../outside
C: d9 LOGIN alice alice
C: d10 LOGOUT
S: * PREAUTH [CAPABILITY IMAP4rev1 LITERAL+ SASL-IR ID IDLE UIDPLUS NAMESPACE UNSELECT MOVE CHILDREN] localhost ready
S: d1 BAD FETCH not allowed in the authenticated state
S: d2 NO [NONEXISTENT] no such mailbox
S: * FLAGS (\Answered \Flagged \Deleted \Seen \Draft)
S: * OK [PERMANENTFLAGS (\Answered \Flagged \Deleted \Seen \Draft \*)] Flags permitted.
S: * 2 EXISTS
S: * 2 RECENT
S: * OK [UNSEEN 1] First unseen.
S: * OK [UIDVALIDITY <ANY>] UIDs valid
S: * OK [UIDNEXT 3] Predicted next UID
S: d3 OK [READ-WRITE] SELECT completed
S: d4 BAD message number out of range
S: d5 BAD expected ')' closing the fetch attributes
S: d6 NO [TRYCREATE] no such mailbox
S: d7 NO [BADCHARSET (UTF-8 US-ASCII)] unsupported charset
S: d8 NO empty, '.' or '..' name components are not allowed
S: d9 BAD LOGIN not allowed in the selected state
S: * BYE logging out
S: d10 OK LOGOUT completed
