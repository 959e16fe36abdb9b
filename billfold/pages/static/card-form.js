// Card forms of the billing pages. Card details go from Stripe's own field to Stripe and
// never to Billfold: a new card is saved through a SetupIntent (confirmCardSetup), and the
// form then posts only the resulting payment method's ID. A payment that needs 3-D Secure
// is finished with confirmCardPayment, after which the server re-reads it from Stripe.
(function () {
  "use strict";
  var field = document.getElementById("card-element");
  var trigger = document.querySelector("[data-confirm-payment]");
  if (!field && !trigger) return;
  var key = (field || trigger).dataset.publishableKey;
  var stripe = window.Stripe(key);
  var card = null;
  if (field) {
    card = stripe.elements().create("card");
    card.mount(field);
  }

  function showError(form, text) {
    var box = form.querySelector("[data-card-error]") || document.querySelector("[data-card-error]");
    box.textContent = text;
    box.hidden = false;
    box.focus && box.setAttribute("tabindex", "-1");
  }

  function usesNewCard(form) {
    var chosen = form.querySelector("input[name='payment_method_choice']:checked");
    return !chosen || chosen.value === "new";
  }

  function toggleNewCard(form) {
    var section = form.querySelector("[data-new-card]");
    if (section) section.hidden = !usesNewCard(form);
    var save = form.querySelector("[data-save-card]");
    if (save) save.hidden = !usesNewCard(form);
  }

  document.querySelectorAll("form[data-card-form]").forEach(function (form) {
    form.querySelectorAll("input[name='payment_method_choice']").forEach(function (radio) {
      radio.addEventListener("change", function () { toggleNewCard(form); });
    });
    toggleNewCard(form);
    form.addEventListener("submit", function (event) {
      if (!usesNewCard(form)) return;  // a saved card: the server does the rest
      event.preventDefault();
      var button = form.querySelector("button[type='submit']");
      button.disabled = true;
      var body = new FormData();
      body.append("csrf_token", form.querySelector("input[name='csrf_token']").value);
      fetch("/billing/cards/setup-intent", { method: "POST", body: body, credentials: "same-origin" })
        .then(function (response) { return response.json(); })
        .then(function (answer) {
          if (!answer.clientSecret) throw new Error(answer.error || "Please try again.");
          return stripe.confirmCardSetup(answer.clientSecret, { payment_method: { card: card } });
        })
        .then(function (result) {
          if (result.error) throw new Error(result.error.message || "Your card was not accepted.");
          var intent = result.setupIntent;
          var method = typeof intent.payment_method === "string" ? intent.payment_method : intent.payment_method.id;
          form.querySelector("input[name='payment_method_id']").value = method;
          form.submit();
        })
        .catch(function (error) {
          button.disabled = false;
          showError(form, error.message || String(error));
        });
    });
  });

  if (trigger) {
    trigger.addEventListener("click", function () {
      var form = trigger.closest("form");
      trigger.disabled = true;
      stripe.confirmCardPayment(trigger.dataset.clientSecret).then(function () {
        form.submit();  // the server re-reads the payment from Stripe and says how it ended
      }, function () { form.submit(); });
    });
  }
})();
