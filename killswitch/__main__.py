from killswitch.cli import entry

entry()
