from django.urls import path

from bornes import views

urlpatterns = [
    path("api/get_subscription", views.get_subscription_view),
]
