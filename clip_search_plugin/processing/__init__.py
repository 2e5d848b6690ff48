"""The Processing provider and its algorithms, sending the same typed requests as the dock."""
