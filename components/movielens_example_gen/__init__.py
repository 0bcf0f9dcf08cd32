"""MovieLensExampleGen: a TFX component turning MovieLens 100K into splits."""

from components.movielens_example_gen.component import MovieLensExampleGen
from components.movielens_example_gen.spec import QuarantinedRows
from components.movielens_example_gen.split import SplitConfig

__all__ = ['MovieLensExampleGen', 'QuarantinedRows', 'SplitConfig']
