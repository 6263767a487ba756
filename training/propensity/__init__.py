"""Churn and conversion propensity: calibrated LightGBM + logistic regression models on point-in-time user features.

    from training.propensity.train import train_propensity      # evaluate, fit, log, register
    from training.propensity.publish import publish_propensity  # champion -> BentoML store
"""
