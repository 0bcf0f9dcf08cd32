"""The model app in Debian's Chromium, against a real server on a tiny model and a real feature store.

Every test runs twice: with the SQLite store and with a real redis-server
(the ``redis_url`` fixture starts Debian's).
"""
import os
import pathlib
import re
import shutil

import pytest
import redis

from contract import names
from serving.feature_store import open_store
from serving.feature_store.bootstrap import bootstrap

from test_feature_store import _write_ml100k
from test_serving import NAME, push, start_server, tiny_models  # noqa: F401 (a fixture)

pytestmark = pytest.mark.unit
CHROMIUM = shutil.which('chromium') or '/usr/bin/chromium'
DOCS = pathlib.Path(__file__).resolve().parents[1] / 'docs'


@pytest.fixture(scope='module', params=['sqlite', 'redis'])
def app_server(request, tiny_models, tmp_path_factory, redis_url):  # noqa: F811
  base = tmp_path_factory.mktemp('served')
  push(tiny_models['history_ranking'], base, 1)
  if request.param == 'sqlite':
    url = str(tmp_path_factory.mktemp('store') / 'feature_store.sqlite')
  else:
    url = redis_url
    redis.Redis.from_url(url).flushdb()
  with open_store(url) as store:
    bootstrap(store, _write_ml100k(tmp_path_factory.mktemp('data') / 'ml-100k'))
  server, client = start_server(base, feature_store=url)
  yield client
  server.stop()


def _shown(page):
  return page.eval_on_selector_all('[data-testid=recommendation]', 'items => items.map(x => x.dataset.movieId)')


def test_a_new_user_rates_movies_sees_the_list_change_and_why(app_server, tmp_path):
  from playwright.sync_api import sync_playwright
  client = app_server
  titles = {m['movie_id']: m['title'] for m in client.get(f'/v1/models/{NAME}/catalog').json()['movies']}
  with sync_playwright() as p:
    browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                args=['--no-sandbox', '--disable-background-networking'])
    try:
      page = browser.new_page(viewport={'width': 1280, 'height': 900})
      page.goto(client.url + '/app')
      page.wait_for_selector('body[data-ready=true]')
      page.click('[data-testid=new-user]')
      page.wait_for_selector('[data-testid=recommendation]')
      before = _shown(page)
      assert len(before) == min(names.DEFAULT_K, len(titles))
      rated = before[:2]
      for movie_id in rated:
        page.fill('[data-testid=search]', titles[movie_id])
        page.click(f'[data-testid=rate-{movie_id}-5]')
        # recommend leaves out rated movies: the list changes once the rating reached the store.
        page.wait_for_selector(f'[data-testid=recommendation][data-movie-id="{movie_id}"]', state='detached')
      after = _shown(page)
      assert after != before and not set(rated) & set(after)
      assert page.locator('[data-testid=rated] li').count() == 2
      _move_the_variety_knob(page, client, after)
      page.click(f'[data-testid=explain-{after[0]}]')
      why = page.locator(f'[data-testid=why-{after[0]}]')
      why.locator('[data-testid=because]').first.wait_for()
      text = why.inner_text()
      assert any(f'Because you rated {titles[m]} 5' in text for m in rated), text
      assert 'history' in text
      artifact = pathlib.Path(os.environ.get('TEST_ARTIFACTS', tmp_path)) / 'app.png'
      artifact.parent.mkdir(parents=True, exist_ok=True)
      page.screenshot(path=str(artifact), full_page=True)
      assert artifact.stat().st_size > 10_000
    finally:
      browser.close()


def _move_the_variety_knob(page, client, by_score):
  """The slider's range is the server's; at its top the list is recommend_diverse's, back at 0 the score order."""
  knob = page.locator('[data-testid=diversity]')
  assert page.locator('[data-testid=variety]').is_visible()
  assert (float(knob.get_attribute('min')), float(knob.get_attribute('max'))) == names.DIVERSITY_RANGE
  user_id = re.search(r'user (\d+)', page.inner_text('[data-testid=who]')).group(1)
  top = names.DIVERSITY_RANGE[1]
  expected = client.post(f'/v1/models/{NAME}:recommend', {'user_id': user_id, 'k': names.DEFAULT_K,
                                                          names.DIVERSITY: top}).json()['recommendations']
  varied = [r['movie_id'] for r in expected]
  assert varied != by_score, 'the tiny model gives the same list at both ends of the knob; nothing to check'
  knob.fill(f'{top:g}')
  page.wait_for_function('ids => JSON.stringify([...document.querySelectorAll("[data-testid=recommendation]")]'
                         '.map(x => x.dataset.movieId)) === JSON.stringify(ids)', arg=varied)
  knob.fill(f'{names.DIVERSITY_RANGE[0]:g}')
  page.wait_for_function('ids => JSON.stringify([...document.querySelectorAll("[data-testid=recommendation]")]'
                         '.map(x => x.dataset.movieId)) === JSON.stringify(ids)', arg=by_score)


def test_explain_route_by_id_states_completeness_and_refuses_a_body_without_a_movie(app_server):
  client = app_server
  client.post('/v1/users/1/ratings', {'movie_id': '3', 'rating': 5, 'timestamp': 880000100})
  response = client.post(f'/v1/models/{NAME}:explain', {'user_id': '1', 'movie_id': '4'})
  assert response.status_code == 200, response.text
  body = response.json()
  assert body['completeness_error'] < body['tolerance'] == names.EXPLAIN_TOLERANCE
  assert abs(sum(g['attribution'] for g in body['groups']) - (body['score'] - body['baseline_score'])) < 1e-4
  assert {h['movie_id'] for h in body['history']} <= {'1', '2', '3'}
  assert sum(h['share'] for h in body['history']) == pytest.approx(1.0) or not body['history']
  missing = client.post(f'/v1/models/{NAME}:explain', {'user_id': '1'})
  assert missing.status_code == 400 and '"movie_id" is required' in missing.json()['error']
  unknown = client.post(f'/v1/models/{NAME}:explain', {'movie_id': '4', 'colour': 'red'})
  assert unknown.status_code == 400 and "Unknown fields ['colour']" in unknown.json()['error']
