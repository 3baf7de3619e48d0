//! `OpenAiModel::from_env`. Its own test binary with a single test: it changes the process
//! environment, which must not race with other threads reading it.

#![cfg(feature = "openai")]

use nanovm_runtime::model::ModelRequest;
use nanovm_runtime::openai::{
    ENV_API_KEY, ENV_BASE_URL, ENV_CONSTRAIN, ENV_MODEL, OpenAiConfigError, OpenAiModel,
};

#[test]
fn from_env_reads_the_three_variables() {
    // SAFETY: the only test in this binary, and nothing else runs on another thread.
    unsafe {
        std::env::remove_var(ENV_BASE_URL);
        std::env::remove_var(ENV_API_KEY);
        std::env::remove_var(ENV_MODEL);
    }
    assert_eq!(
        OpenAiModel::from_env().unwrap_err(),
        OpenAiConfigError::MissingEnv(ENV_BASE_URL)
    );

    // A base URL without a model name is a configuration error now, not a failed first step.
    unsafe {
        std::env::set_var(ENV_BASE_URL, "http://127.0.0.1:8088/v1");
    }
    assert_eq!(
        OpenAiModel::from_env().unwrap_err(),
        OpenAiConfigError::MissingEnv(ENV_MODEL)
    );
    // An unknown constraint mode too.
    unsafe {
        std::env::set_var(ENV_MODEL, "smollm2");
        std::env::set_var(ENV_CONSTRAIN, "json");
    }
    assert!(matches!(
        OpenAiModel::from_env().unwrap_err(),
        OpenAiConfigError::BadEnv {
            name: ENV_CONSTRAIN,
            ..
        }
    ));
    unsafe {
        std::env::set_var(ENV_CONSTRAIN, "grammar");
        std::env::set_var(ENV_API_KEY, "sk-env");
    }
    let m = OpenAiModel::from_env().unwrap();
    assert_eq!(m.endpoint(), "http://127.0.0.1:8088/v1/chat/completions");
    let req = ModelRequest {
        step: "s".into(),
        model: None,
        system: None,
        prompt: "p".into(),
        max_tokens: None,
        choices: None,
        instruction: None,
        min_confidence: None,
        answer: None,
    };
    assert_eq!(m.chat_request(&req).unwrap().model, "smollm2");
    assert!(!format!("{m:?}").contains("sk-env"));

    // Empty counts as unset.
    unsafe {
        std::env::set_var(ENV_MODEL, "");
        std::env::set_var(ENV_BASE_URL, "  ");
    }
    assert_eq!(
        OpenAiModel::from_env().unwrap_err(),
        OpenAiConfigError::MissingEnv(ENV_BASE_URL)
    );
}
