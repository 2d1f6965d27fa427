# Unknown commands and empty lines; commands are case-insensitive; ten errors in a row end the session.
S: +OK POP3 server ready
C: user alice
S: +OK
C: pass alice
S: +OK alice has 3 messages
C: Stat
S: +OK 3 562
C: FOO
S: -ERR unknown command
C:
S: -ERR unknown command
C: RETR1
S: -ERR unknown command
C: LIST 1 2
S: -ERR syntax error
C: XTND XMIT
S: -ERR unknown command
C: HELO
S: -ERR unknown command
C: EHLO x
S: -ERR unknown command
C: GET / HTTP/1.0
S: -ERR unknown command
C: NOOP
S: +OK
C: RETR 0
S: -ERR no such message
C: DELE 0
S: -ERR no such message
C: LIST 1
S: +OK 1 166
C: a
S: -ERR unknown command
C: b
S: -ERR unknown command
C: c
S: -ERR unknown command
C: d
S: -ERR unknown command
C: e
S: -ERR unknown command
C: f
S: -ERR unknown command
C: g
S: -ERR unknown command
C: h
S: -ERR unknown command
C: i
S: -ERR unknown command
C: j
S: -ERR unknown command
S: -ERR too many errors; closing connection
C: DELE 1
C: QUIT
