"""decade's top floor: one command runs the whole ladder and prints the leaderboard."""
