"""certctl benchmark workbench: seed, drive, analyse and record certctl load scenarios."""
