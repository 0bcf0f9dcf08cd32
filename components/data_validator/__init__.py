"""DataValidator: schema, drift and OOV checks with an HTML report; stops the run on anomalies."""
from components.data_validator.component import DataValidator
from components.data_validator.executor import DataValidationError

__all__ = ['DataValidator', 'DataValidationError']
