#!/usr/bin/env python3
"""webmail.cgi: the webmail as a classic CGI program (see webmail(8))."""
import sys

from mailsuite.webmail.cgi_entry import main

sys.exit(main(sys.argv))
