"""A PBKDF2 password hasher with fewer iterations, for the Django test project only."""

from django.contrib.auth.hashers import PBKDF2PasswordHasher


class QuickPBKDF2PasswordHasher(PBKDF2PasswordHasher):
    iterations = 10_000
