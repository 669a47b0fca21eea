"""The cloud management side: migrations and status over NB and SB (issue: migration)."""
