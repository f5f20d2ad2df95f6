"""Intake: sources that turn folders and files into validated deliveries; ledger; kinds."""
