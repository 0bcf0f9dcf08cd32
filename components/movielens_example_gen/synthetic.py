"""MovieLens-shaped synthetic data of any size, in GroupLens ML-100K's format.

    python -m components.movielens_example_gen.synthetic --ratings 1000000 --out-dir /tmp/ml-1m

Writes ``u.data``, ``u.item`` (latin-1), ``u.user``, ``u.genre``,
``u.occupation`` and ``u.info`` exactly as GroupLens lays them out, so
``MovieLensExampleGen(data_dir=...)`` reads them like the real thing. Use it to
measure the pipeline at sizes GroupLens does not publish in this format
(docs/scale.md); it is not a substitute for MovieLens when judging a model.

What makes it MovieLens-shaped:

* **Power-law popularity.** Movie ``r`` (by popularity rank) is chosen with
  weight ``(r + 10) ** -popularity_exponent``; a few movies get most
  ratings, most get few. User activity is log-normal with a floor of 20
  ratings a user, like GroupLens's.
* **Latent preferences.** Every user and movie has a vector of
  ``latent_dim`` factors and a bias. A rating is
  ``round(mean + user bias + movie bias + <user, movie> + noise)`` clipped to
  1..5, so a model can learn something: a bias model beats the global mean,
  and factors beat biases. Users also pick movies they like more often.
* **Side features that carry signal.** A movie's genres follow its factors
  (19 GroupLens genres, 1-3 a movie), as do titles' first words; a user's
  gender, age band and occupation follow theirs. Ages, occupations (the
  21 of ``u.occupation``), zip codes (some Canadian) and release dates have
  ML-100K's ranges; one movie in a thousand has no release date.
* **Time.** Users arrive uniformly over ML-100K's seven months and rate in
  bursts after arriving, so a time split has cold users, as ML-100K does.

Everything follows from ``seed``: the same arguments write the same bytes.
Ratings are written one batch of users at a time, so memory stays small at
any size (the per-movie arrays are the largest thing held).
"""

import argparse
import dataclasses
import os
import sys
from typing import Dict, List, Optional, Tuple
import urllib.parse

import numpy as np

from components.movielens_example_gen import parsing
from transforms import features

# ML-100K's rating period: 1997-09-20 to 1998-04-22.
FIRST_TIMESTAMP = 874724710
LAST_TIMESTAMP = 893286638

# u.occupation, in its order, with ML-100K's user counts as weights.
OCCUPATIONS: Tuple[Tuple[str, int], ...] = (
    ('administrator', 79), ('artist', 28), ('doctor', 7), ('educator', 95), ('engineer', 67),
    ('entertainment', 18), ('executive', 32), ('healthcare', 16), ('homemaker', 7), ('lawyer', 12),
    ('librarian', 51), ('marketing', 26), ('none', 9), ('other', 105), ('programmer', 66),
    ('retired', 14), ('salesman', 12), ('scientist', 31), ('student', 196), ('technician', 27),
    ('writer', 45))

# Title words. Some hold latin-1 letters, as GroupLens titles do ('Café au
# lait'), so the encoding path is exercised at every size.
_ADJECTIVES = ('Lost', 'Silent', 'Last', 'Secret', 'Dark', 'Golden', 'Wild', 'Broken', 'Hidden',
               'Eternal', 'Little', 'Great', 'Strange', 'Midnight', 'Crimson', 'Frozen', 'Señor',
               'Café', 'Mañana', 'Über', 'Amélie', 'Noël')
# One noun list per genre, in features.GENRE_NAMES order: a title's noun
# follows its first genre, so title tokens say something about a movie.
_NOUNS = (
    ('Thing',), ('Mission', 'Strike', 'Target'), ('Journey', 'Quest', 'Island'),
    ('Toons', 'Dreams'), ('Puppy', 'Friends', 'Holiday'), ('Wedding', 'Weekend', 'Party'),
    ('Heist', 'Alibi', 'Witness'), ('Story', 'Portrait', 'Record'), ('River', 'Letters', 'Garden'),
    ('Dragon', 'Kingdom', 'Spell'), ('Shadow', 'Dame', 'Rain'), ('Nightmare', 'House', 'Curse'),
    ('Song', 'Stage', 'Dance'), ('Riddle', 'Key', 'Stranger'), ('Kiss', 'Heart', 'Summer'),
    ('Planet', 'Signal', 'Machine'), ('Pursuit', 'Fear', 'Trap'), ('Front', 'Battalion', 'Trenches'),
    ('Canyon', 'Frontier', 'Rider'))
_MONTHS = ('Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec')
_CANADIAN_ZIP_LETTERS = 'ABCEGHJKLMNPRSTVXY'
# How much taste, next to popularity, decides which movies a user rates.
_TASTE_WEIGHT = 1.0
# Before the biases and factors. Users rate what they like and popular
# movies, which lifts the mean by about 0.4: this lands it near ML-100K's 3.53.
_BASE_RATING = 3.15


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
  """How much to generate and how it is shaped.

  Attributes:
    num_ratings: rows of u.data, exactly.
    num_users: None scales ML-100K's 943 users with the ratings (106 a user).
    num_movies: None scales ML-100K's 1,682 movies with the square root of
      the ratings, so larger sets are denser, as MovieLens 1M and 10M are.
    latent_dim: factors per user and movie.
    popularity_exponent: the power law of movie popularity.
    min_ratings_per_user: every user rates at least this many movies.
    noise_std: rating noise, on the 1..5 scale before rounding.
    seed: everything follows from it.
  """
  num_ratings: int = 100_000
  num_users: Optional[int] = None
  num_movies: Optional[int] = None
  latent_dim: int = 8
  popularity_exponent: float = 1.0
  min_ratings_per_user: int = 20
  noise_std: float = 0.85
  seed: int = 0

  def sizes(self) -> Tuple[int, int]:
    """(users, movies), with the defaults resolved and checked."""
    scale = self.num_ratings / 100_000
    users = self.num_users or max(1, round(943 * scale))
    movies = self.num_movies or max(self.min_ratings_per_user * 2, round(1682 * scale ** 0.5))
    # A user rates at most 60% of the catalogue and at least the floor.
    if int(0.6 * movies) < self.min_ratings_per_user:
      raise ValueError(f'{movies} movies are too few for {self.min_ratings_per_user} ratings a user.')
    if users * self.min_ratings_per_user > self.num_ratings:
      raise ValueError(f'{users} users x {self.min_ratings_per_user} ratings each exceed '
                       f'{self.num_ratings} ratings; pass fewer users or more ratings.')
    if users * int(0.6 * movies) < self.num_ratings:
      raise ValueError(f'{users} users cannot give {self.num_ratings} distinct ratings of '
                       f'{movies} movies; pass more users or movies.')
    return users, movies


@dataclasses.dataclass
class _World:
  """The hidden truth the files are drawn from."""
  user_factors: np.ndarray     # [users, latent_dim]
  user_bias: np.ndarray        # [users]
  movie_factors: np.ndarray    # [movies, latent_dim]
  movie_bias: np.ndarray       # [movies]
  log_popularity: np.ndarray   # [movies]
  ratings_per_user: np.ndarray  # [users], sums to num_ratings
  arrival: np.ndarray          # [users], unix seconds
  active_seconds: np.ndarray   # [users], from first to last rating at most


def _ratings_per_user(rng: np.random.Generator, users: int, total: int, floor: int,
                      cap: int) -> np.ndarray:
  """Log-normal activity with a floor and a cap, summing to ``total`` exactly."""
  weights = rng.lognormal(0.0, 1.1, users)
  counts = np.full(users, floor, dtype=np.int64)
  free = np.ones(users, dtype=bool)
  left = total - counts.sum()
  # Hand out what is left in proportion to the weights; users that hit the
  # cap drop out and their share goes round again.
  while left > 0:
    share = weights * free
    extra = np.floor(share / share.sum() * left).astype(np.int64)
    # Rounding down leaves a remainder: one more each to the largest shares.
    remainder = left - extra.sum()
    if remainder:
      extra[np.argsort(-share, kind='stable')[:remainder]] += 1
    counts += extra
    over = counts > cap
    left = int((counts[over] - cap).sum())
    counts[over] = cap
    free &= ~over & (counts < cap)
  return counts


def _make_world(config: SyntheticConfig, rng: np.random.Generator) -> _World:
  users, movies = config.sizes()
  k = config.latent_dim
  # Factor scale so that <user, movie> has a standard deviation of about 0.5.
  scale = (0.25 / k) ** 0.25
  arrival = rng.integers(FIRST_TIMESTAMP, LAST_TIMESTAMP - 3_600, users)
  popularity_rank = rng.permutation(movies)
  log_popularity = -config.popularity_exponent * np.log(popularity_rank + 10.0)
  standardized = (log_popularity - log_popularity.mean()) / (log_popularity.std() or 1.0)
  return _World(
      user_factors=rng.normal(0.0, scale, (users, k)),
      user_bias=rng.normal(0.0, 0.4, users),
      movie_factors=rng.normal(0.0, scale, (movies, k)),
      # Popular movies are rated a little higher, as in MovieLens.
      movie_bias=rng.normal(0.0, 0.4, movies) + 0.2 * standardized,
      log_popularity=log_popularity,
      ratings_per_user=_ratings_per_user(rng, users, config.num_ratings, config.min_ratings_per_user,
                                        int(0.6 * movies)),
      arrival=arrival,
      # Most users rate within days of arriving, a few for months; nobody
      # rates after the period ends.
      active_seconds=np.minimum(rng.lognormal(np.log(3 * 86_400), 2.0, users), LAST_TIMESTAMP - arrival))


def _user_ratings(world: _World, user: int, config: SyntheticConfig,
                  rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(movie indices, ratings, timestamps) of one user's distinct ratings."""
  affinity = world.movie_factors @ world.user_factors[user]
  # Gumbel top-k: distinct movies, drawn by popularity and by taste.
  keys = world.log_popularity + _TASTE_WEIGHT * affinity + rng.gumbel(size=affinity.shape)
  count = int(world.ratings_per_user[user])
  chosen = np.argpartition(-keys, count - 1)[:count]
  rng.shuffle(chosen)
  score = (_BASE_RATING + world.user_bias[user] + world.movie_bias[chosen] + affinity[chosen]
           + rng.normal(0.0, config.noise_std, count))
  ratings = np.clip(np.rint(score), 1, 5).astype(np.int64)
  # Front-loaded: most of a user's ratings come soon after arriving.
  timestamps = (world.arrival[user] + rng.random(count) ** 3 * world.active_seconds[user]).astype(np.int64)
  return chosen, ratings, timestamps


def _genres(world: _World, rng: np.random.Generator) -> List[List[int]]:
  """1-3 genre indices per movie, following its factors."""
  movies, k = world.movie_factors.shape
  genre_factors = rng.normal(0.0, 1.0, (len(features.GENRE_NAMES), k))
  # Drama and comedy are the common genres in MovieLens; 'unknown' is rare.
  prior = np.zeros(len(features.GENRE_NAMES))
  prior[features.GENRE_NAMES.index('Drama')] = 1.5
  prior[features.GENRE_NAMES.index('Comedy')] = 1.2
  prior[0] = -np.inf
  scores = world.movie_factors @ genre_factors.T / world.movie_factors.std() + prior
  scores = scores + rng.gumbel(size=scores.shape)
  counts = rng.choice([1, 2, 3], size=movies, p=[0.5, 0.35, 0.15])
  order = np.argsort(-scores, axis=1)
  genres = [sorted(order[m, :counts[m]].tolist()) for m in range(movies)]
  for m in np.flatnonzero(rng.random(movies) < 0.001):
    genres[m] = [0]
  return genres


def _item_lines(world: _World, rng: np.random.Generator) -> List[str]:
  """u.item: id|title|release date|video release date|url|19 genre flags."""
  genres = _genres(world, rng)
  movies = len(genres)
  years = np.clip(1998 - np.floor(rng.exponential(6.0, movies)), 1922, 1998).astype(int)
  months = rng.integers(0, 12, movies)
  days = rng.integers(1, 29, movies)
  undated = rng.random(movies) < 0.001
  lines = []
  for m in range(movies):
    first = genres[m][0]
    title = f'{_ADJECTIVES[rng.integers(len(_ADJECTIVES))]} {_NOUNS[first][rng.integers(len(_NOUNS[first]))]}'
    if undated[m]:
      # Like ML-100K's movie 267: no date, and the title says so.
      title, release, url = 'unknown', '', ''
    else:
      title = f'{title} ({years[m]})'
      release = f'{days[m]:02d}-{_MONTHS[months[m]]}-{years[m]}'
      url = 'http://us.imdb.com/M/title-exact?' + urllib.parse.quote(title, encoding=parsing.ENCODING)
    flags = '|'.join('1' if g in genres[m] else '0' for g in range(len(features.GENRE_NAMES)))
    lines.append(f'{m + 1}|{title}|{release}||{url}|{flags}')
  return lines


def _user_lines(world: _World, rng: np.random.Generator) -> List[str]:
  """u.user: id|age|gender|occupation|zip, each following the user's factors."""
  factors = world.user_factors / world.user_factors.std()
  users = len(factors)
  # About 29% women, as in ML-100K, more so along the first factor.
  women = rng.random(users) < 1.0 / (1.0 + np.exp(-(factors[:, 0] - 0.9)))
  occupation_names = [name for name, _ in OCCUPATIONS]
  prior = np.log([count for _, count in OCCUPATIONS])
  occupation_factors = rng.normal(0.0, 0.7, (len(OCCUPATIONS), factors.shape[1]))
  logits = prior + factors @ occupation_factors.T + rng.gumbel(size=(users, len(OCCUPATIONS)))
  occupations = np.argmax(logits, axis=1)
  student = occupations == occupation_names.index('student')
  retired = occupations == occupation_names.index('retired')
  ages = np.rint(34 + 6 * factors[:, 1] + rng.normal(0, 9, users))
  ages = np.where(student, rng.integers(15, 30, users), ages)
  ages = np.where(retired, rng.integers(55, 74, users), ages)
  ages = np.clip(ages, 7, 73).astype(int)
  region = np.clip(np.floor((factors[:, 2] + 3) / 6 * 10), 0, 9).astype(int)
  lines = []
  for u in range(users):
    if rng.random() < 0.01:
      letters = rng.choice(list(_CANADIAN_ZIP_LETTERS), 3)
      zip_code = f'{letters[0]}{rng.integers(10)}{letters[1]}{rng.integers(10)}{letters[2]}'
    else:
      zip_code = f'{region[u]}{rng.integers(0, 10_000):04d}'
    lines.append(f'{u + 1}|{ages[u]}|{"F" if women[u] else "M"}|{occupation_names[occupations[u]]}|{zip_code}')
  return lines


def _write_text(path: str, text: str) -> None:
  with open(path, 'w', encoding=parsing.ENCODING, newline='\n') as fh:
    fh.write(text)


def _write_lines(path: str, lines: List[str]) -> None:
  _write_text(path, '\n'.join(lines) + '\n')


def side_files() -> Dict[str, str]:
  """u.genre and u.occupation, byte for byte as GroupLens writes them (a test compares)."""
  # u.genre ends with an empty line in GroupLens's copy; so does this one.
  genres = [f'{name}|{i}' for i, name in enumerate(features.GENRE_NAMES)] + ['']
  return {'u.genre': '\n'.join(genres) + '\n', 'u.occupation': '\n'.join(name for name, _ in OCCUPATIONS) + '\n'}


def generate(out_dir: str, config: SyntheticConfig = SyntheticConfig(),
             users_per_batch: int = 2_000) -> Dict[str, int]:
  """Writes a MovieLens-shaped data set to ``out_dir``; the same arguments, the same bytes.

  Args:
    out_dir: created if missing; its GroupLens files are overwritten.
    config: size and shape.
    users_per_batch: users whose ratings are formatted and written at once.

  Returns:
    Counts: ``ratings``, ``users``, ``movies``.
  """
  rng = np.random.default_rng(config.seed)
  world = _make_world(config, rng)
  users, movies = len(world.user_bias), len(world.movie_bias)
  os.makedirs(out_dir, exist_ok=True)
  # Side files get their own stream, so changing them never changes ratings.
  side_rng = np.random.default_rng([config.seed, 1])
  _write_lines(os.path.join(out_dir, parsing.U_ITEM), _item_lines(world, side_rng))
  _write_lines(os.path.join(out_dir, parsing.U_USER), _user_lines(world, side_rng))
  for name, text in side_files().items():
    _write_text(os.path.join(out_dir, name), text)
  _write_lines(os.path.join(out_dir, 'u.info'),
               [f'{users} users', f'{movies} items', f'{config.num_ratings} ratings'])
  written = 0
  with open(os.path.join(out_dir, parsing.U_DATA), 'w', encoding='ascii', newline='\n') as fh:
    for start in range(0, users, users_per_batch):
      rows = []
      for user in range(start, min(start + users_per_batch, users)):
        chosen, ratings, timestamps = _user_ratings(world, user, config, rng)
        rows.extend(f'{user + 1}\t{m + 1}\t{r}\t{t}\n' for m, r, t in zip(
            chosen.tolist(), ratings.tolist(), timestamps.tolist()))
      # GroupLens's u.data is in no particular order; neither is this batch.
      order = rng.permutation(len(rows))
      fh.write(''.join(rows[i] for i in order))
      written += len(rows)
  return {'ratings': written, 'users': users, 'movies': movies}


def main(argv: Optional[List[str]] = None) -> int:
  parser = argparse.ArgumentParser(
      prog='python -m components.movielens_example_gen.synthetic',
      description='Write MovieLens-shaped synthetic data in GroupLens ML-100K format.')
  parser.add_argument('--ratings', type=int, required=True, help='Rows of u.data, e.g. 1000000.')
  parser.add_argument('--out-dir', required=True, help='Folder to write u.data, u.item, u.user, ... into.')
  parser.add_argument('--users', type=int, default=None, help='Default: 943 per 100K ratings.')
  parser.add_argument('--movies', type=int, default=None, help='Default: 1682 x sqrt(ratings / 100K).')
  parser.add_argument('--seed', type=int, default=0)
  args = parser.parse_args(argv)
  counts = generate(args.out_dir, SyntheticConfig(num_ratings=args.ratings, num_users=args.users,
                                                  num_movies=args.movies, seed=args.seed))
  print(f'Wrote {counts["ratings"]} ratings of {counts["movies"]} movies by {counts["users"]} users '
        f'to {args.out_dir}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
