// The model app: plain JS over the server's REST routes (serving/server.py), no build step.
'use strict';

const K = 10;
const state = {model: null, movies: [], userId: null, rated: [], shown: []};
const $ = (id) => document.getElementById(id);

async function call(method, path, body) {
  const response = await fetch(path, {
    method, headers: {'Content-Type': 'application/json'},
    body: body === undefined ? undefined : JSON.stringify(body)});
  const payload = await response.json();
  if (!response.ok) {
    $('error').textContent = payload.error || `${method} ${path}: ${response.status}`;
    throw new Error($('error').textContent);
  }
  $('error').textContent = '';
  return payload;
}

const model = (verb) => `/v1/models/${encodeURIComponent(state.model)}${verb}`;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  Object.entries(attrs || {}).forEach(([k, v]) => (k === 'onclick' ? (node.onclick = v) : node.setAttribute(k, v)));
  children.forEach((c) => node.append(c));
  return node;
}

function setUser(userId) {
  state.userId = userId;
  state.rated = [];
  state.shown = [];
  $('who').textContent = `You are user ${userId}`;
  renderRated();
  return recommend();
}

function renderResults() {
  const query = $('search').value.trim().toLowerCase();
  const list = $('results');
  list.replaceChildren();
  if (!query) return;
  state.movies.filter((m) => m.title.toLowerCase().includes(query)).slice(0, 8).forEach((movie) => {
    const stars = el('span', {class: 'stars'});
    for (let r = 1; r <= 5; r++) {
      stars.append(el('button', {'data-testid': `rate-${movie.movie_id}-${r}`, title: `Rate ${r}`,
                                 onclick: () => rate(movie, r)}, `${r}★`));
    }
    list.append(el('li', {}, movie.title, ' ', stars));
  });
}

function renderRated() {
  const list = $('rated');
  list.replaceChildren();
  if (!state.rated.length) list.append(el('li', {class: 'muted'}, 'None yet.'));
  state.rated.forEach((r) => list.append(el('li', {}, `${r.title}: ${r.rating}★`)));
}

async function rate(movie, rating) {
  if (!state.userId) {
    $('error').textContent = 'Pick a user or start as a new one first.';
    return;
  }
  await call('POST', `/v1/users/${encodeURIComponent(state.userId)}/ratings`,
             {movie_id: movie.movie_id, rating, timestamp: Math.floor(Date.now() / 1000)});
  state.rated = state.rated.filter((r) => r.movie_id !== movie.movie_id).concat([{...movie, rating}]);
  renderRated();
  await recommend();
}

async function recommend() {
  if (!state.userId) return;
  const body = {user_id: state.userId, k: K};
  // The variety knob (the server's "diversity", recommend_diverse); 0 ranks by score, as without it.
  const diversity = Number($('diversity').value);
  if (!$('variety').hidden && diversity > 0) body.diversity = diversity;
  const answer = await call('POST', model(':recommend'), body);
  const before = new Set(state.shown);
  const list = $('recommendations');
  list.replaceChildren();
  answer.recommendations.forEach((r) => {
    const fresh = before.size > 0 && !before.has(r.movie_id);
    const why = el('div', {class: 'why', 'data-testid': `why-${r.movie_id}`});
    const item = el('li', {class: fresh ? 'new' : '', 'data-testid': 'recommendation', 'data-movie-id': r.movie_id},
                    r.title, el('span', {class: 'score'}, `score ${r.score.toFixed(2)}`),
                    fresh ? el('span', {class: 'badge'}, 'new') : '', ' ',
                    el('button', {'data-testid': `explain-${r.movie_id}`, onclick: () => explain(r, why)}, 'Why?'),
                    why);
    list.append(item);
  });
  if (!answer.recommendations.length) list.append(el('li', {class: 'muted'}, 'Nothing left to recommend.'));
  state.shown = answer.recommendations.map((r) => r.movie_id);
}

async function explain(recommendation, box) {
  const answer = await call('POST', model(':explain'), {user_id: state.userId, movie_id: recommendation.movie_id});
  box.replaceChildren();
  if (answer.history.length) {
    answer.history.forEach((h) => box.append(el('div', {'data-testid': 'because'},
        `Because you rated ${h.title} ${h.rating}★ (${Math.round(100 * h.share)}% of the lift from your ratings)`)));
  } else {
    box.append(el('div', {class: 'muted'}, 'None of your ratings raised this score.'));
  }
  box.append(el('div', {class: 'muted'},
      `Predicted rating ${answer.score.toFixed(2)}★, against ${answer.baseline_score.toFixed(2)}★ for ` +
      'someone we know nothing about; what made the difference:'));
  const largest = Math.max(1e-9, ...answer.groups.map((g) => Math.abs(g.attribution)));
  answer.groups.forEach((g) => {
    const width = Math.round(120 * Math.abs(g.attribution) / largest);
    const bar = el('span', {class: `bar ${g.attribution >= 0 ? 'up' : 'down'}`, style: `width: ${width}px`});
    box.append(el('div', {}, bar,
                  `${g.group} ${g.attribution >= 0 ? '+' : ''}${g.attribution.toFixed(3)}`));
  });
}

async function start() {
  const ready = await call('GET', '/readyz');
  state.model = ready.model;
  $('model').textContent = `model ${ready.model}, version ${ready.version}`;
  const catalog = await call('GET', model('/catalog'));
  state.movies = catalog.movies;
  // The knob's range is the server's (contract/names.py DIVERSITY_RANGE), in ten steps.
  const [low, high] = catalog.diversity_range;
  Object.assign($('diversity'), {min: low, max: high, step: (high - low) / 10, value: low});
  const signatures = (await call('GET', model('/metadata'))).metadata.signature_def.signature_def;
  // Models pushed before recommend_diverse existed get no knob.
  $('variety').hidden = !('recommend_diverse' in signatures);
  $('diversity').addEventListener('change', () => {
    $('diversity-value').textContent = $('diversity').value;
    recommend();
  });
  $('search').addEventListener('input', renderResults);
  // New users get an id far above MovieLens' 943, so they start with no history.
  $('new-user').onclick = () => setUser(String(100000 + Math.floor(Math.random() * 900000)));
  $('use-user').onclick = () => $('user-id').value.trim() && setUser($('user-id').value.trim());
  document.body.setAttribute('data-ready', 'true');
}

start();
