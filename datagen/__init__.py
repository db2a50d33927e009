"""datagen: input sequences paired with ragged target sequences whose law is known exactly.

Examples:
    >>> import datagen
    >>> data = datagen.generate(4, task="echo")
    >>> data["x"].shape, data["steps"].shape
    ((4, 16, 4), (4, 16))
"""

from ._api import make as make
from ._api import teacher_weights as teacher_weights
from ._chorales import FEATURES as CHORALE_FEATURES
from ._chorales import ChoraleCodec as ChoraleCodec
from ._chorales import PlacedNote as PlacedNote
from ._chorales import windows as chorale_windows
from ._errors import DatasetError as DatasetError
from ._generate import generate as generate
from ._import import import_chorales as import_chorales
from ._info import info as info
from ._lengths import RANDOM_LENGTHS as RANDOM_LENGTHS
from ._lengths import draw_lengths as draw_lengths
from ._make import merge as merge
from ._params import DEFAULTS as DEFAULTS
from ._params import FORMATS as FORMATS
from ._params import GENERATOR_VERSION as GENERATOR_VERSION
from ._params import IMPORTED_TASKS as IMPORTED_TASKS
from ._params import LENGTHS as LENGTHS
from ._params import TASKS as TASKS
from ._params import TOKEN_TARGETS as TOKEN_TARGETS
from ._params import TOKEN_TASKS as TOKEN_TASKS
from ._params import ParameterError as ParameterError
from ._read import read as read
from ._read import split_range as split_range
from ._score import chorale_file as chorale_file
from ._score import chorale_score as chorale_score
from ._score import chorale_voices as chorale_voices
from ._tfdata import load as load
from ._tfdata import windows_per_sample as windows_per_sample

__version__ = GENERATOR_VERSION

__all__ = [
    "CHORALE_FEATURES",
    "ChoraleCodec",
    "DEFAULTS",
    "DatasetError",
    "FORMATS",
    "GENERATOR_VERSION",
    "IMPORTED_TASKS",
    "LENGTHS",
    "ParameterError",
    "PlacedNote",
    "RANDOM_LENGTHS",
    "TASKS",
    "TOKEN_TARGETS",
    "TOKEN_TASKS",
    "chorale_file",
    "chorale_score",
    "chorale_voices",
    "chorale_windows",
    "draw_lengths",
    "generate",
    "import_chorales",
    "info",
    "load",
    "make",
    "merge",
    "read",
    "split_range",
    "teacher_weights",
    "windows_per_sample",
]
