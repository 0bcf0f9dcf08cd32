"""MovieLens recommender on TFX: the pipeline package.

Install with the pinned set: ``pip install -c constraints.txt -e .``
"""
import setuptools

setuptools.setup(
    name='movielens-tfx',
    version='0.1.0',
    description='A production TFX pipeline for a MovieLens recommender (TFRS models, TFMA, TF Serving).',
    python_requires='>=3.10,<3.11',
    packages=setuptools.find_packages(include=['contract*', 'pipeline*', 'components*', 'transforms*', 'trainer*',
                                               'kubeflow*', 'serving*']),
    package_data={'components': ['*/README.md', 'eval_report/templates/*.j2'], 'serving': ['app/*.html', 'app/*.js']},
    install_requires=[
        'tfx==1.16.0',
        'tensorflow==2.16.2',
        'tf-keras==2.16.0',
        'tensorflow-recommenders==0.7.3',
        'tensorflow-transform==1.16.0',
        'tensorflow-data-validation==1.16.1',
        'tensorflow-model-analysis==0.47.1',
        'tfx-bsl==1.16.1',
        'ml-metadata==1.16.0',
        'tensorflow-serving-api==2.16.1',
        'apache-beam[gcp]==2.59.0',
        'keras-tuner==1.3.5',
        'protobuf==3.20.3',
        'pyarrow==10.0.1',
        'numpy==1.26.4',
        'kfp==2.5.0',
        # serving/: the local server's HTTP (granian, RSGI, on uvloop), JSON and metrics; docs/serving.md says why.
        'granian==2.8.9',
        'uvloop==0.23.0',
        'orjson==3.13.0',
        'prometheus_client==0.26.0',
        # serving/feature_store: the Redis backend and the event stream (pinned through Beam already).
        'redis==5.3.1',
    ],
    extras_require={'dev': ['pytest==8.3.3', 'hypothesis==6.168.5', 'requests==2.34.2', 'ruff==0.8.4',
                            # tests/test_app.py drives Debian's Chromium with it (no browser download).
                            'playwright==1.65.2']},
)
