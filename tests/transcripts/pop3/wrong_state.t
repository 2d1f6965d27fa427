# Commands outside the state they belong to.
S: +OK POP3 server ready
C: STAT
S: -ERR command not valid in this state
C: RETR 1
S: -ERR command not valid in this state
C: NOOP
S: -ERR command not valid in this state
C: PASS alice
S: -ERR USER first
C: USER alice
S: +OK
C: PASS bob
S: -ERR [AUTH] invalid user name or password
C: PASS alice
S: -ERR USER first
C: USER alice
S: +OK
C: PASS alice
S: +OK alice has 3 messages
C: USER bob
S: -ERR command not valid in this state
C: APOP alice 0123456789abcdef0123456789abcdef
S: -ERR command not valid in this state
C: STLS
S: -ERR command not valid in this state
C: AUTH PLAIN AGJvYgBib2I=
S: -ERR command not valid in this state
C: STAT
S: +OK 3 562
C: QUIT
S: +OK bye (0 messages deleted)
