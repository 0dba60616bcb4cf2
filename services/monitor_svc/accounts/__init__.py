"""Accounts: users, their API keys, email login and sessions (AccountService), and the operator's command."""
