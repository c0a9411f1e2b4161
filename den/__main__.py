from den.cli.main import run

run()
