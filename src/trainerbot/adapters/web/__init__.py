"""The web dashboard: sign in with Discord, and see and change what each server's bot knows."""
