# Message numbers that are not numbers, out of range, or deleted.
S: +OK POP3 server ready
C: USER alice
S: +OK
C: PASS alice
S: +OK alice has 3 messages
C: RETR
S: -ERR syntax error
C: RETR abc
S: -ERR syntax error
C: RETR -1
S: -ERR syntax error
C: RETR 0
S: -ERR no such message
C: RETR 4
S: -ERR no such message
C: LIST 99999999999999999999
S: -ERR no such message
C: UIDL 1x
S: -ERR syntax error
C: NOOP
S: +OK
C: TOP 1
S: -ERR syntax error
C: TOP 1 x
S: -ERR syntax error
C: TOP 1 -1
S: -ERR syntax error
C: TOP 9 1
S: -ERR no such message
C: DELE 3
S: +OK message 3 deleted
C: DELE 3
S: -ERR message is deleted
C: RETR 3
S: -ERR message is deleted
C: LIST 3
S: -ERR message is deleted
C: STAT x
S: -ERR syntax error
C: RSET
S: +OK maildrop has 3 messages (562 octets)
C: QUIT
S: +OK bye (0 messages deleted)
