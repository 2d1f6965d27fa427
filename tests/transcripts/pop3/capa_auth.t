# CAPA in both states (a local pipe may log in in the clear: USER and SASL PLAIN
# are offered; STLS is not, there is no socket), then AUTH PLAIN with a
# continuation line.  AGFsaWNlAGFsaWNl is base64 of NUL alice NUL alice.
S: +OK POP3 server ready
C: CAPA
S: +OK capability list follows
S: TOP
S: UIDL
S: RESP-CODES
S: AUTH-RESP-CODE
S: PIPELINING
S: USER
S: SASL PLAIN
S: EXPIRE NEVER
S: IMPLEMENTATION mailsuite
S: .
C: AUTH
S: +OK mechanisms follow
S: PLAIN
S: .
C: AUTH PLAIN
S: + 
C: AGFsaWNlAGJvYg==
S: -ERR [AUTH] invalid user name or password
C: AUTH PLAIN
S: + 
C: AGFsaWNlAGFsaWNl
S: +OK alice has 3 messages
C: CAPA
S: +OK capability list follows
S: TOP
S: UIDL
S: RESP-CODES
S: AUTH-RESP-CODE
S: PIPELINING
S: EXPIRE NEVER
S: IMPLEMENTATION mailsuite
S: .
C: QUIT
S: +OK bye (0 messages deleted)
