"""Feature names, the label key and vocabulary names: the one place they live.

ExampleGen writes these raw features, ``preprocessing_fn`` reads them, the
Trainer reads the transformed ones, and the Evaluator takes ``LABEL_KEY`` from
here. Nothing else spells a feature name.
"""

# Raw features written by MovieLensExampleGen, one tf.Example per rating.
USER_ID = 'user_id'              # bytes, e.g. b'196'
MOVIE_ID = 'movie_id'            # bytes, e.g. b'242'
MOVIE_TITLE = 'movie_title'      # bytes, e.g. b'Toy Story (1995)'
GENRES = 'genres'                # bytes, multi-valued, names from GENRE_NAMES
RELEASE_YEAR = 'release_year'    # int64; absent when u.item has no date
USER_AGE = 'user_age'            # int64
USER_GENDER = 'user_gender'      # bytes, 'M' or 'F'
USER_OCCUPATION = 'user_occupation'  # bytes, e.g. b'technician'
USER_ZIP = 'user_zip'            # bytes, e.g. b'85711'
TIMESTAMP = 'timestamp'          # int64, unix seconds
RATING = 'rating'                # float, 1..5: the label

LABEL_KEY = RATING

# Point-in-time user history: the user's ratings strictly before this
# rating's timestamp, oldest first, at most HISTORY_LENGTH (the most recent).
# ExampleGen computes them for training; a serving request carries the same
# lists, and Transform turns both into model inputs the same way, so training
# and serving cannot skew (docs/features.md).
HISTORY_MOVIE_IDS = 'history_movie_ids'  # bytes, multi-valued
HISTORY_RATINGS = 'history_ratings'      # float, multi-valued, aligned with the ids
HISTORY_LENGTH = 50
# Point-in-time movie statistics: how many ratings the movie had strictly
# before this rating's timestamp, by anyone, and their mean (0 when none).
# ExampleGen computes them; a serving request sends the live values from its
# feature store, or 0 and 0 when it has none, and the model then falls back to
# the movie bias it learned (docs/features.md).
MOVIE_RATING_COUNT = 'movie_rating_count'  # int64
MOVIE_RATING_MEAN = 'movie_rating_mean'    # float

# Raw features and their kinds, for the raw-JSON serving signature.
# 'scalar' features carry exactly one value per example; 'multi' any number;
# 'optional' zero or one.
STRING_FEATURES = (USER_ID, MOVIE_ID, MOVIE_TITLE, USER_GENDER, USER_OCCUPATION, USER_ZIP)
INT_FEATURES = (USER_AGE, TIMESTAMP, MOVIE_RATING_COUNT)
OPTIONAL_INT_FEATURES = (RELEASE_YEAR,)
MULTI_STRING_FEATURES = (GENRES, HISTORY_MOVIE_IDS)
FLOAT_FEATURES = (MOVIE_RATING_MEAN,)
MULTI_FLOAT_FEATURES = (HISTORY_RATINGS,)
# A multi-valued feature whose values pair up with another's, one for one.
ALIGNED_WITH = {HISTORY_RATINGS: HISTORY_MOVIE_IDS}

# Valid ranges of raw values. MovieLensExampleGen quarantines rows outside
# them and schema/schema.pbtxt states the same bounds (tests/test_schema.py).
RATING_RANGE = (1.0, 5.0)
AGE_RANGE = (1, 120)
RELEASE_YEAR_RANGE = (1900, 2030)
# 1995-01-01 (before MovieLens existed) to 2100-01-01; 0 is a common sentinel.
TIMESTAMP_RANGE = (788918400, 4102444800)

# Ages in u.user run 7..73; these edges follow MovieLens 1M's age groups.
AGE_BOUNDARIES = (18.0, 25.0, 35.0, 45.0, 50.0, 56.0)

# The 19 genres of u.genre, in its order (the u.item flag columns follow it).
GENRE_NAMES = (
    'unknown', 'Action', 'Adventure', 'Animation', "Children's", 'Comedy',
    'Crime', 'Documentary', 'Drama', 'Fantasy', 'Film-Noir', 'Horror',
    'Musical', 'Mystery', 'Romance', 'Sci-Fi', 'Thriller', 'War', 'Western',
)

# Vocabulary file names written by Transform; the Trainer sizes embeddings
# from them with tft.experimental.get_vocabulary_size_by_name.
USER_VOCAB = 'user_id_vocab'
MOVIE_VOCAB = 'movie_id_vocab'
GENDER_VOCAB = 'gender_vocab'
OCCUPATION_VOCAB = 'occupation_vocab'
ZIP_VOCAB = 'zip3_vocab'
GENRE_VOCAB = 'genre_vocab'

# Out-of-vocabulary buckets: ids Transform did not see in train land here.
OOV_BUCKETS = 1


TITLE_VOCAB = 'title_token_vocab'
# One line per train movie, most rated first: the catalog a top-K
# recommendation scores. Fields are joined with CATALOG_SEPARATOR: movie id,
# title, genres joined with '|', release year ('' when unknown).
CATALOG_VOCAB = 'movie_catalog'
CATALOG_SEPARATOR = '\t'
# Transform pads history to HISTORY_LENGTH with this id (and rating 0).
HISTORY_PAD_ID = -1


# Slice features: Transform outputs that no model reads, for the Evaluator's
# slices (TFMA gets them from the ``transform_features`` signature).
# NEW_USER: 1 when the user is not in the train vocabulary (cold start).
NEW_USER = 'new_user'
# MOVIE_POPULARITY: 0 head, 1 torso, 2 tail, by the movie's rank in the train
# vocabulary (most rated first). Head is the top POPULARITY_EDGES[0] of train
# movies, torso up to POPULARITY_EDGES[1], tail the rest and unseen movies.
# On ML-100K's seed split the head's 10% of movies get 42% of train ratings,
# the torso's 40% get 50%, the tail 8%.
MOVIE_POPULARITY = 'movie_popularity'
POPULARITY_EDGES = (0.1, 0.5)
POPULARITY_NAMES = ('head', 'torso', 'tail')
# Transform outputs from user_age and timestamp, read by models and slices:
# the age bucket (an index into AGE_BOUNDARIES' buckets) and the day of week
# (0 = Monday, UTC).
AGE_BUCKET = 'age_bucket'
WEEKDAY = 'weekday'


def transformed_name(key: str) -> str:
  """Name of the Transform output derived from raw feature ``key``."""
  return key + '_xf'
