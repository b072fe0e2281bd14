"""Analysis of trained routers: routing statistics, posterior uncertainty, evaluation under
policies, timing. Plain data out (dicts of tensors and floats); rendering is the scripts' job."""
