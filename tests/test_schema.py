"""The curated schema agrees with what ExampleGen and Transform assume."""
import pytest
import tensorflow_data_validation as tfdv

from pipeline import configs
from transforms import features as f

pytestmark = pytest.mark.unit


@pytest.fixture(scope='module')
def schema():
  return tfdv.load_schema_text(configs.SCHEMA_FILE)


def test_ranges_match_the_ones_examplegen_quarantines_by(schema):
  rating = tfdv.get_feature(schema, f.RATING).float_domain
  assert (rating.min, rating.max) == f.RATING_RANGE
  for name, bounds in ((f.USER_AGE, f.AGE_RANGE), (f.RELEASE_YEAR, f.RELEASE_YEAR_RANGE),
                       (f.TIMESTAMP, f.TIMESTAMP_RANGE)):
    domain = tfdv.get_feature(schema, name).int_domain
    assert (domain.min, domain.max) == bounds == f.BY_NAME[name].valid_range, name


def test_closed_domains_match_the_feature_table(schema):
  assert tuple(tfdv.get_domain(schema, f.USER_GENDER).value) == tuple(sorted(f.BY_NAME[f.USER_GENDER].domain))
  assert tuple(tfdv.get_domain(schema, f.GENRES).value) == f.BY_NAME[f.GENRES].domain


def test_history_lists_are_bounded_by_the_history_length(schema):
  for name in (f.HISTORY_MOVIE_IDS, f.HISTORY_RATINGS):
    assert tfdv.get_feature(schema, name).value_count.max == f.HISTORY_LENGTH


def test_genre_domain_is_u_genre(schema):
  assert tuple(tfdv.get_domain(schema, f.GENRES).value) == f.GENRE_NAMES


def test_label_is_not_required_when_serving(schema):
  assert list(tfdv.get_feature(schema, f.RATING).not_in_environment) == ['SERVING']
  assert set(schema.default_environment) == {'TRAINING', 'SERVING'}


def test_every_raw_feature_is_in_the_schema(schema):
  assert {feature.name for feature in schema.feature} == {x.name for x in f.FEATURES}


def test_drift_is_watched_on_categorical_and_numeric_features(schema):
  assert tfdv.get_feature(schema, f.USER_OCCUPATION).drift_comparator.infinity_norm.threshold > 0
  assert tfdv.get_feature(schema, f.RATING).drift_comparator.jensen_shannon_divergence.threshold > 0
  # Ids change with every period by design; their OOV rate is checked instead.
  assert not tfdv.get_feature(schema, f.USER_ID).HasField('drift_comparator')
