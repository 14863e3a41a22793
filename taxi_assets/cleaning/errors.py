"""What can be wrong with a raw trip file."""


class BadTripFile(ValueError):
    """The raw file does not match its color's pinned layout; the message says where and how."""


class IntegersWrittenAsFloats(Exception):
    """An integer column holds values like "264.0": parse the file again with float integers."""
