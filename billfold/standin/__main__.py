"""`python -m billfold.standin --port N`: serve the stand-in in this process."""

from billfold.standin.launcher import main

main()
