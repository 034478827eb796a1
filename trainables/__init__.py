"""What runs on workers: datasets, models, losses, the training loop, phases, the trial function.

Nothing here imports the orchestrator. Import the submodules you need; this package imports
nothing heavy at load time so that the CLI starts instantly.
"""
